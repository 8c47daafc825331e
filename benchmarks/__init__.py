"""Performance benchmarks of cxr_utils: `python -m benchmarks [--quick] [--out FILE.json]`."""
