"""The `predict` job kind (being written)."""
