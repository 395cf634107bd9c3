"""imgidx: an image-embedding index (photos -> VGG16 vectors -> SQLite + FAISS -> similar / clean / train)."""
