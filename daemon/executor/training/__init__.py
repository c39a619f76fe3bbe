"""Training library run by the executor process: the loop, optimisers and schedules, checkpoints, summaries.

Importing this package imports no torch; import daemon.executor.training.loop (which does) only in the executor.
config and metrics are torch-free and safe to use from the daemon's main process and from scoring scripts.
"""
