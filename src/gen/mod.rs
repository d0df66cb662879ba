//! Generation jobs on worker threads: prompt → stream of notes; sampling, constraints, cancel, chaining, likelihood.
