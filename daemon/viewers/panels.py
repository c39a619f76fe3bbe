"""SlicePanel: one Bokeh figure showing a 2D slice on real axes, with an amplitude colour bar, an optional class
overlay and points (picks) on top.

Shared by the example-set page and the survey page. A slice is given as an array A[u, v] with an Axis for each of
its two dimensions: u runs left to right, v top to bottom when it is the sample (time/depth) axis, else bottom to
top. An Axis maps cell indices to what a user knows: inline and crossline numbers, time in ms or depth in m. Cell k
is drawn centred on start + k * step, so a tick at 1204 sits on inline 1204.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper, Range1d
from bokeh.palettes import Cividis256, Greys256, Inferno256, Viridis256
from bokeh.plotting import figure

from daemon.common.palette import class_colours, seismic_colours

PALETTES: dict[str, list[str]] = {
    "seismic": seismic_colours(), "greys": list(Greys256), "viridis": list(Viridis256),
    "cividis": list(Cividis256), "inferno": list(Inferno256),
}
TRANSPARENT = "rgba(0, 0, 0, 0)"


def sample_label(unit: str) -> str:
    """The name of a survey's sample axis with its unit: time (ms), time (s) or depth (m)."""
    return f"depth ({unit})" if unit == "m" else f"time ({unit})"


@dataclass(frozen=True)
class Axis:
    """One axis of a slice: its label, the value of cell 0 and the step between cells; `down` for time/depth."""

    label: str
    start: float = 0.0
    step: float = 1.0
    down: bool = False

    @classmethod
    def of_values(cls, label: str, values: np.ndarray, down: bool = False) -> "Axis":
        """The axis of a survey's line numbers or sample values (regular: the first two give the step)."""
        step = float(values[1] - values[0]) if len(values) > 1 else 1.0
        return cls(label, float(values[0]), step, down)

    def shifted(self, first: int) -> "Axis":
        """The same axis starting at cell `first` (a crop's window inside its survey)."""
        return Axis(self.label, self.start + first * self.step, self.step, self.down)

    def value(self, index: np.ndarray | int) -> np.ndarray:
        """Axis values of cell indices."""
        return self.start + np.asarray(index) * self.step

    def edges(self, n: int) -> tuple[float, float]:
        """The outer edges of n cells (the plot range)."""
        return self.start - self.step / 2, self.start + (n - 0.5) * self.step


class SlicePanel:
    """A figure with a seismic image and its colour bar, an optional class overlay and optional points."""

    def __init__(self, title: str, u: Axis, v: Axis, palette: str = "seismic"):
        self.u, self.v = u, v
        self.shape = (1, 1)
        empty = {"x": [0.0], "y": [0.0], "dw": [1.0], "dh": [1.0]}
        self.image = ColumnDataSource(data={"image": [np.zeros((1, 1), np.float32)], **empty})
        self.overlay = ColumnDataSource(data={"image": [np.full((1, 1), np.nan, np.float32)], **empty})
        self.points = ColumnDataSource(data={"x": [], "y": [], "color": [], "label": []})
        self.mapper = LinearColorMapper(palette=PALETTES[palette], low=-1, high=1)
        self.class_mapper = LinearColorMapper(palette=class_colours(10), low=0, high=10, nan_color=TRANSPARENT,
                                              low_color=TRANSPARENT, high_color=TRANSPARENT)
        self.fig = figure(title=title, x_axis_label=u.label, y_axis_label=v.label, width=420, height=420,
                          x_range=Range1d(0, 1), y_range=Range1d(1, 0) if v.down else Range1d(0, 1),
                          tools="pan,wheel_zoom,box_zoom,reset,save", tooltips=None)
        self.fig.toolbar.logo = None
        self.fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image, color_mapper=self.mapper)
        self.overlay_glyph = self.fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.overlay,
                                            color_mapper=self.class_mapper, global_alpha=0.4)
        self.fig.scatter("x", "y", source=self.points, color="color", size=7, line_color="black",
                         legend_field="label")
        self.fig.add_layout(ColorBar(color_mapper=self.mapper, width=12, title="amplitude"), "right")
        self.fig.legend.location = "top_right"
        self.fig.legend.visible = False
        self.fig.legend.click_policy = "hide"
        self.fig.legend.background_fill_alpha = 0.6

    def set_axes(self, u: Axis, v: Axis) -> None:
        """Draw the next slices on these axes (a new survey, or a crop from elsewhere in its survey)."""
        self.u, self.v = u, v
        self.fig.xaxis[0].axis_label, self.fig.yaxis[0].axis_label = u.label, v.label

    def _place(self, n_u: int, n_v: int) -> dict[str, list[float]]:
        """Where an [n_u, n_v] image lies in axis units (the corner cell's outer edge, and its size)."""
        (u0, u1), (v0, v1) = self.u.edges(n_u), self.v.edges(n_v)
        return {"x": [u0], "y": [v0], "dw": [u1 - u0], "dh": [v1 - v0]}

    def show(self, a: np.ndarray, title: str | None = None) -> None:
        """Draw slice a[u, v] (any real dtype); colour limits follow the slice."""
        a = np.asarray(a, dtype=np.float32)
        u, v = a.shape
        self.shape = (u, v)
        self.image.data = {"image": [np.ascontiguousarray(a.T)], **self._place(u, v)}
        self.mapper.low, self.mapper.high = symmetric_limits(a)
        (u0, u1), (v0, v1) = self.u.edges(u), self.v.edges(v)
        self.fig.x_range.start, self.fig.x_range.end = u0, u1
        self.fig.y_range.start, self.fig.y_range.end = (v1, v0) if self.v.down else (v0, v1)
        if title is not None:
            self.fig.title.text = title

    def show_classes(self, labels: np.ndarray | None, n_classes: int) -> None:
        """Draw class ids labels[u, v] over the image (negative ids: nothing); None removes the overlay."""
        if labels is None:
            self.overlay.data = {"image": [np.full((1, 1), np.nan, np.float32)], "x": [0.0], "y": [0.0],
                                 "dw": [1.0], "dh": [1.0]}
            return
        lab = np.array(labels, dtype=np.float32)  # a copy: the labels may be a read-only memmap
        lab[lab < 0] = np.nan
        self.class_mapper.palette = class_colours(n_classes)
        self.class_mapper.low, self.class_mapper.high = 0, max(n_classes, 1)
        self.overlay.data = {"image": [np.ascontiguousarray(lab.T)], **self._place(*lab.shape)}

    def show_points(self, u: np.ndarray, v: np.ndarray, cls: np.ndarray, names: list[str]) -> None:
        """Points at the cells (u, v) (indices of this slice), coloured by class id."""
        colors = class_colours(len(names))
        self.points.data = {"x": self.u.value(u).tolist(), "y": self.v.value(v).tolist(),
                            "color": [colors[c] for c in cls], "label": [f"pick: {names[c]}" for c in cls]}
        self.fig.legend.visible = len(u) > 0  # an empty legend box would hide part of the image

    def set_palette(self, name: str) -> None:
        self.mapper.palette = PALETTES[name]

    def set_zoom(self, pixels_per_cell: float) -> None:
        """Figure size from the slice size, within what fits on a screen."""
        u, v = self.shape
        self.fig.width = int(min(1300, max(440, u * pixels_per_cell + 200)))  # room for the colour bar and tools
        self.fig.height = int(min(1000, max(340, v * pixels_per_cell + 90)))


def symmetric_limits(a: np.ndarray) -> tuple[float, float]:
    """Colour limits +-the 99th percentile of |a| (NaN ignored), so a few spikes do not wash the image out."""
    finite = np.abs(a[np.isfinite(a)])
    hi = float(np.percentile(finite, 99)) if finite.size else 1.0
    return (-hi, hi) if hi > 0 else (-1.0, 1.0)
