"""Benchmarks: `python -m bench [--quick] [--json PATH]`. See bench/README.md."""
