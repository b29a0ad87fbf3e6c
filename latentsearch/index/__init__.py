"""FAISS indexes and their checkpoints."""
