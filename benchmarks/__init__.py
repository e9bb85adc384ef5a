"""Benchmarks (scripts, not tests): `python -m benchmarks.emit`."""
