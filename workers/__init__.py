"""seisd workers package."""
