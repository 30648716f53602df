"""qmplex benchmarks: ``python -m bench`` (see bench/README.md).

Kept empty of imports: ``python -m bench.memprobe import ...`` measures import time
through this package.
"""
