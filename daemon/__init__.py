"""seisd daemon package. The main process imports no torch: keep torch imports inside executor-side modules."""
__version__ = "0.1.0"
