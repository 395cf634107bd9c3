"""imgidx indexer: sources -> fetch -> images -> embed -> store."""
