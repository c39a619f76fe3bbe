"""The colours of classes and of amplitudes, one definition for every picture seisd makes.

The PNG figures of a prediction (daemon/executor/predict/figures.py), the survey and example-set viewer
(daemon/viewers/) and the TensorBoard images of a training job (daemon/executor/training/summary.py) all colour
class k with class_colours()[k], so a facies has one colour wherever a user meets it. A class keeps its colour
whatever the number of classes: classes 0-9 take the ten colours of matplotlib's tab10 (the same as Bokeh's
Category10), classes 10-19 their lighter partners from tab20, and further ids cycle.

Amplitudes use a diverging palette: blue below zero, white at zero, red above (the usual seismic display).
"""
from __future__ import annotations

import numpy as np

TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")
TAB10_LIGHT = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d",
               "#9edae5")
CLASS_COLOURS = TAB10 + TAB10_LIGHT


def class_colours(n: int) -> list[str]:
    """'#rrggbb' of class ids 0..n-1 (at least one)."""
    return [CLASS_COLOURS[k % len(CLASS_COLOURS)] for k in range(max(n, 1))]


def class_rgb(n: int) -> np.ndarray:
    """uint8 [n, 3] RGB of class ids 0..n-1 (at least one row)."""
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in class_colours(n)], dtype=np.uint8)


def seismic_colours(n: int = 255) -> list[str]:
    """'#rrggbb' from blue (most negative) through white (zero) to red (most positive); n odd puts white in the
    middle entry, n even in the two middle ones."""
    out = []
    for k in range(n):
        t = 2.0 * k / (n - 1) - 1.0 if n > 1 else 0.0  # -1 .. 1
        r, g, b = (1 + t, 1 + t, 1.0) if t < 0 else (1.0, 1 - t, 1 - t)
        out.append("#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255)))
    return out
