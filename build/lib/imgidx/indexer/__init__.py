"""imgidx indexer: sources -> fetch -> images -> embed -> store."""

__version__ = "0.1.0"
