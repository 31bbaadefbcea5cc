"""The benchmark and load runs (`python -m benchmarks.run`, `python -m benchmarks.load`, from the
repository root)."""
