"""Viewer servers (TensorBoard, the example-set and survey viewer) supervised by the daemon."""
