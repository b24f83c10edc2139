"""Pure active-learning scoring and selection (numpy + FAISS only, no I/O)."""
