"""seisd daemon package."""
