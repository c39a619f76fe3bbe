"""Prediction engine: whole-volume tiled or patch apply, resumable outputs, exports and figures.

Imported only in executor processes (it needs torch); the daemon's main process never imports it.
"""
from daemon.executor.predict.apply import PredictError, apply_block, predict_volume
from daemon.executor.predict.outputs import OutputError, score, write_hdf5, write_segy
from daemon.executor.predict.tiling import TilePlan

__all__ = ["PredictError", "OutputError", "TilePlan", "apply_block", "predict_volume", "score", "write_hdf5",
           "write_segy"]
