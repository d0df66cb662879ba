//! Exact rational tick arithmetic for lowering: tuplets and broken rhythm never drift, and each
//! note's start and end are rounded to whole ticks once.

use super::ast;

/// An exact rational number of ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rat {
    pub(crate) n: i64,
    pub(crate) d: i64,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs().max(1)
}

impl Rat {
    pub(crate) const ZERO: Rat = Rat { n: 0, d: 1 };
    pub(crate) const ONE: Rat = Rat { n: 1, d: 1 };
    pub(crate) const TWO: Rat = Rat { n: 2, d: 1 };
    pub(crate) const HALF: Rat = Rat { n: 1, d: 2 };

    /// A written length `num/den` as a (reduced) rational.
    #[inline]
    pub(crate) fn length(l: ast::Length) -> Rat {
        Rat::new(l.num as i64, l.den as i64)
    }

    // Almost every value is a whole number of ticks: the `d == 1` fast paths skip the
    // divisions of `gcd`, which dominated the profile of the corpus benchmark.
    #[inline]
    pub(crate) fn new(n: i64, d: i64) -> Rat {
        if d == 1 {
            return Rat { n, d };
        }
        // Tick lengths like 240 * 1/2 divide evenly: one remainder instead of Euclid's loop.
        if d > 0 && n % d == 0 {
            return Rat { n: n / d, d: 1 };
        }
        let g = gcd(n, d);
        Rat { n: n / g, d: d / g }
    }

    #[inline]
    pub(crate) fn mul(self, o: Rat) -> Rat {
        if self.d == 1 && o.d == 1 {
            return Rat { n: self.n * o.n, d: 1 };
        }
        if o.n == 1 && o.d == 1 {
            return self;
        }
        Rat::new(self.n * o.n, self.d * o.d)
    }

    #[inline]
    pub(crate) fn add(self, o: Rat) -> Rat {
        if self.d == o.d {
            return Rat::new(self.n + o.n, self.d);
        }
        let r = Rat::new(self.n * o.d + o.n * self.d, self.d * o.d);
        // Pathological nests of unfinished tuplets could grow the denominator without bound;
        // past a million sub-ticks the position is snapped to the nearest tick.
        if r.d > 1_000_000 {
            Rat { n: r.round() as i64, d: 1 }
        } else {
            r
        }
    }

    /// The smaller of two (denominators are positive, so cross-multiplying keeps the order).
    pub(crate) fn min(self, o: Rat) -> Rat {
        if self.n * o.d <= o.n * self.d {
            self
        } else {
            o
        }
    }

    #[inline]
    pub(crate) fn round(self) -> u64 {
        if self.d == 1 {
            return self.n.max(0) as u64;
        }
        ((2 * self.n + self.d) / (2 * self.d)).max(0) as u64
    }
}
