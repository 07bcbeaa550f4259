"""Benchmarks of the WedSync realtime system: `python -m bench SCENARIO` (bench/__main__.py)."""
