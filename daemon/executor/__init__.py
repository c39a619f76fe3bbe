"""The executor side: executor processes (`python -m daemon.executor`) and their children: the runners of every job
kind, training, prediction, models and model files, Ray rank and shard helpers. Imports torch; nothing on the main
side imports this package."""
