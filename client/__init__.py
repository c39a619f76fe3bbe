"""seisd client package."""
