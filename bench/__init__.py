"""Benchmarks: each module exposes ``run(args) -> dict`` and is driven by ``python -m bench``."""
