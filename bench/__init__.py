"""The side-by-side benchmark; run it as ``python bench/throughput.py``."""
