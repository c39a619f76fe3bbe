"""Torch-free code both sides use: settings, devices, the home's layout, lifelines and exit wording of children,
malloc tuning, CURVE key helpers and the Ray task that starts an executor."""
