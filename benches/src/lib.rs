//! Benchmarks live in `benches/` (criterion) and `run` (fio in the test-bed guest).
