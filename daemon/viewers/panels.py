"""SlicePanel: one Bokeh figure showing a 2D slice, with an optional class overlay and points (picks) on top.

Shared by the example-set page and the survey page. A slice is given as an array A[u, v]: u runs left to right,
v top to bottom when v is the sample (time/depth) axis, else bottom to top.
"""
from __future__ import annotations

import numpy as np
from bokeh.models import ColumnDataSource, LinearColorMapper, Range1d
from bokeh.palettes import Category10, Cividis256, Greys256, Inferno256, Viridis256
from bokeh.plotting import figure


def _red_white_blue(n: int = 256) -> list[str]:
    """The usual seismic palette: blue for negative amplitudes, white at zero, red for positive."""
    out = []
    for k in range(n):
        t = 2.0 * k / (n - 1) - 1.0  # -1 .. 1
        r, g, b = (1 + t, 1 + t, 1.0) if t < 0 else (1.0, 1 - t, 1 - t)
        out.append("#%02x%02x%02x" % (int(r * 255), int(g * 255), int(b * 255)))
    return out


PALETTES: dict[str, list[str]] = {
    "seismic": _red_white_blue(), "greys": list(Greys256), "viridis": list(Viridis256),
    "cividis": list(Cividis256), "inferno": list(Inferno256),
}
TRANSPARENT = "rgba(0, 0, 0, 0)"


def class_colors(n: int) -> list[str]:
    """n distinct colours for class ids 0..n-1 (cycling Category10)."""
    base = list(Category10[10])
    return [base[k % len(base)] for k in range(max(n, 1))]


def symmetric_limits(a: np.ndarray) -> tuple[float, float]:
    """Colour limits +-the 99th percentile of |a| (NaN ignored), so a few spikes do not wash the image out."""
    finite = np.abs(a[np.isfinite(a)])
    hi = float(np.percentile(finite, 99)) if finite.size else 1.0
    return (-hi, hi) if hi > 0 else (-1.0, 1.0)


class SlicePanel:
    """A figure with a seismic image, an optional class overlay and optional points."""

    def __init__(self, title: str, x_label: str, y_label: str, flip_y: bool, palette: str = "seismic"):
        self.flip_y = flip_y
        self.shape = (1, 1)
        self.image = ColumnDataSource(data={"image": [np.zeros((1, 1), np.float32)], "dw": [1], "dh": [1]})
        self.overlay = ColumnDataSource(data={"image": [np.full((1, 1), np.nan, np.float32)], "dw": [1], "dh": [1]})
        self.points = ColumnDataSource(data={"x": [], "y": [], "color": [], "label": []})
        self.mapper = LinearColorMapper(palette=PALETTES[palette], low=-1, high=1)
        self.class_mapper = LinearColorMapper(palette=class_colors(10), low=0, high=10, nan_color=TRANSPARENT,
                                              low_color=TRANSPARENT, high_color=TRANSPARENT)
        self.fig = figure(title=title, x_axis_label=x_label, y_axis_label=y_label, width=420, height=420,
                          x_range=Range1d(0, 1), y_range=Range1d(1, 0) if flip_y else Range1d(0, 1),
                          tools="pan,wheel_zoom,box_zoom,reset,save", tooltips=None)
        self.fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=self.image, color_mapper=self.mapper)
        self.overlay_glyph = self.fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=self.overlay,
                                            color_mapper=self.class_mapper, global_alpha=0.4)
        self.fig.scatter("x", "y", source=self.points, color="color", size=7, line_color="black",
                         legend_field="label")
        self.fig.legend.location = "top_right"
        self.fig.legend.visible = False
        self.fig.legend.click_policy = "hide"
        self.fig.legend.background_fill_alpha = 0.6

    def show(self, a: np.ndarray, title: str | None = None) -> None:
        """Draw slice a[u, v] (any real dtype); colour limits follow the slice."""
        a = np.asarray(a, dtype=np.float32)
        u, v = a.shape
        self.shape = (u, v)
        self.image.data = {"image": [np.ascontiguousarray(a.T)], "dw": [u], "dh": [v]}
        self.mapper.low, self.mapper.high = symmetric_limits(a)
        self.fig.x_range.start, self.fig.x_range.end = 0, u
        self.fig.y_range.start, self.fig.y_range.end = (v, 0) if self.flip_y else (0, v)
        if title is not None:
            self.fig.title.text = title

    def show_classes(self, labels: np.ndarray | None, n_classes: int) -> None:
        """Draw class ids labels[u, v] over the image (negative ids: nothing); None removes the overlay."""
        if labels is None:
            self.overlay.data = {"image": [np.full((1, 1), np.nan, np.float32)], "dw": [1], "dh": [1]}
            return
        lab = np.asarray(labels, dtype=np.float32)
        lab[lab < 0] = np.nan
        self.class_mapper.palette = class_colors(n_classes)
        self.class_mapper.low, self.class_mapper.high = 0, max(n_classes, 1)
        self.overlay.data = {"image": [np.ascontiguousarray(lab.T)], "dw": [lab.shape[0]], "dh": [lab.shape[1]]}

    def show_points(self, u: np.ndarray, v: np.ndarray, cls: np.ndarray, names: list[str]) -> None:
        """Points at cell centres (u, v) coloured by class id."""
        colors = class_colors(len(names))
        self.points.data = {"x": (np.asarray(u) + 0.5).tolist(), "y": (np.asarray(v) + 0.5).tolist(),
                            "color": [colors[c] for c in cls], "label": [f"pick: {names[c]}" for c in cls]}
        self.fig.legend.visible = len(u) > 0  # an empty legend box would hide part of the image

    def set_palette(self, name: str) -> None:
        self.mapper.palette = PALETTES[name]

    def set_zoom(self, pixels_per_cell: float) -> None:
        """Figure size from the slice size, within what fits on a screen."""
        u, v = self.shape
        self.fig.width = int(min(1200, max(260, u * pixels_per_cell + 80)))
        self.fig.height = int(min(1000, max(260, v * pixels_per_cell + 80)))
