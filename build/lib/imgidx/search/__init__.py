"""imgidx search: read-only use of the index (similar, clean, audit, classify) and the `imgidx` CLI."""
