"""Dataset readers: one module per family, each yielding typed records (see records.py)."""
