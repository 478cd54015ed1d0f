"""Benchmark harnesses (run them through the thin scripts in ``benchmarks/``)."""
