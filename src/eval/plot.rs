//! `--plots DIR`: one PNG per feature with each set's density (the KDE the overlap integrates).
//!
//! Drawn by plotters' bitmap backend; text goes through ab_glyph with a font bundled in the
//! binary (DejaVu Sans Mono, `assets/fonts/`), so no system font library is needed.

use super::overlap::{bandwidth, density_on_grid, std_dev, Bandwidth, Grid, GRID};
use super::{EvalError, Evaluation};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

/// Colours of the sets, in [`Evaluation::sets`] order (held-out, takes, markov).
const COLOURS: [RGBColor; 4] =
    [RGBColor(0, 0, 0), RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44)];

fn register_font() -> Result<(), EvalError> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(EvalError::Plot { path: "assets/fonts/DejaVuSansMono.ttf".into(), reason: "not a usable font".into() })
    }
}

/// Writes `DIR/FEATURE.png` for every feature that the held-out tunes and at least one other
/// set have two or more values of; returns the files written.
pub fn write_plots(dir: &Path, eval: &Evaluation) -> Result<Vec<PathBuf>, EvalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| EvalError::Io { path: dir.display().to_string(), reason: e.to_string() })?;
    register_font()?;
    let takes_row = eval.report.rows.first();
    let mut written = Vec::new();
    for (f, info) in eval.report.features.iter().enumerate() {
        let columns: Vec<(&str, Vec<f64>)> =
            eval.sets.iter().map(|s| (s.name.as_str(), s.column(f))).filter(|(_, c)| c.len() >= 2).collect();
        if columns.len() < 2 || columns[0].0 != "held-out" {
            continue;
        }
        let path = dir.join(format!("{}.png", info.name));
        let overlap = takes_row.and_then(|r| r.overlaps[f]);
        let title = match overlap {
            Some(o) => format!("{}  (takes vs held-out overlap {o:.3})", info.name),
            None => info.name.to_string(),
        };
        draw(&path, &title, info.doc, &columns)
            .map_err(|reason| EvalError::Plot { path: path.display().to_string(), reason })?;
        written.push(path);
    }
    Ok(written)
}

/// One chart: a density curve per set on a grid spanning them all.
fn draw(path: &Path, title: &str, doc: &str, columns: &[(&str, Vec<f64>)]) -> Result<(), String> {
    let all: Vec<f64> = columns.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let pooled = std_dev(&all);
    let scale = if pooled > 0.0 { pooled } else { 1.0 };
    // Bandwidths as the overlap computes them: Scott's rule, floored for constant sets.
    let bws: Vec<f64> = columns.iter().map(|(_, c)| bandwidth(c, Bandwidth::Scott).max(0.05 * scale)).collect();
    let widest = bws.iter().copied().fold(0.0, f64::max);
    let min = all.iter().copied().fold(f64::INFINITY, f64::min) - 3.0 * widest;
    let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 3.0 * widest;
    let grid = Grid { lo: min, step: (max - min) / (GRID - 1) as f64 };
    let curves: Vec<Vec<(f64, f64)>> = columns
        .iter()
        .zip(&bws)
        .map(|((_, c), &bw)| {
            density_on_grid(c, bw, grid).into_iter().enumerate().map(|(i, y)| (grid.x(i), y)).collect()
        })
        .collect();
    let top = curves.iter().flatten().map(|p| p.1).fold(0.0, f64::max).max(1e-12) * 1.1;

    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(min..max, 0.0..top)
        .map_err(|e| e.to_string())?;
    let desc: String = doc.chars().take(90).collect();
    chart
        .configure_mesh()
        .x_desc(desc)
        .y_desc("density")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (curve, (name, values))) in curves.into_iter().zip(columns).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(curve, colour.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{name} (n={})", values.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
