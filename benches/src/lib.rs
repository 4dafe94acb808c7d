//! Benchmarks of ringcast against the tools people use today.
