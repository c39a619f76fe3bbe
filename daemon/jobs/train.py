"""The `train` job kind (being written)."""
