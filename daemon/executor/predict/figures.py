"""PNG pictures of inline, crossline and time slices: seismic with picks, prediction, confidence, ground truth.

A user opens these instead of reading numbers. Axes carry the survey's real line numbers and times (or depths);
classes keep the same colour in every panel and figure, and in the viewer and TensorBoard (daemon/common/palette.py),
with a legend of class names. By default the lines drawn go through the picks (lines_through_picks), so the
"seismic and picks" panel shows what the model learnt from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # executors have no display; must be chosen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from daemon.common.palette import class_colours  # noqa: E402

SLICE_KINDS = ("inline", "crossline", "time")


class FigureError(ValueError):
    """A slice or layer that cannot be drawn; the message names the problem and the valid choices."""


@dataclass(frozen=True)
class SurveyAxes:
    """Real coordinates of the volume's axes: line numbers and sample times (or depths)."""

    inlines: np.ndarray
    crosslines: np.ndarray
    samples: np.ndarray
    sample_unit: str = "ms"

    @classmethod
    def of(cls, survey) -> "SurveyAxes":
        """Axes of a workers.survey.Survey (or anything with inlines, crosslines, samples), in its sample unit."""
        geometry = getattr(survey, "geometry", None)
        return cls(np.asarray(survey.inlines), np.asarray(survey.crosslines), np.asarray(survey.samples),
                   getattr(geometry, "sample_unit", "ms"))

    @property
    def sample_name(self) -> str:
        """What the sample axis measures: depth for a survey in metres, else time."""
        return "depth" if self.sample_unit == "m" else "time"

    def index(self, kind: str, value: float) -> int:
        """Index of an inline/crossline number or a sample time; refuses values not on the axis."""
        axis = {"inline": self.inlines, "crossline": self.crosslines, "time": self.samples}[kind]
        hits = np.flatnonzero(np.isclose(axis, value))
        if not hits.size:
            raise FigureError(f"{kind} {value} is not in the survey ({kind}s {axis[0]:g} to {axis[-1]:g}, "
                              f"step {axis[1] - axis[0] if len(axis) > 1 else 0:g})")
        return int(hits[0])


def class_cmap(n_classes: int) -> ListedColormap:
    """Class k's colour of the one palette (daemon/common/palette.py) for k in 0..n_classes-1."""
    return ListedColormap(class_colours(n_classes))


def lines_through_picks(positions: np.ndarray, shape: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """(inline, crossline, sample) indices holding the most picks each ([N, 3] grid indices); among lines with
    equally many, the middle one of them. None without picks."""
    if not len(positions):
        return None
    out = []
    for axis in range(3):
        counts = np.bincount(positions[:, axis], minlength=shape[axis])
        top = np.flatnonzero(counts == counts.max())
        out.append(int(top[len(top) // 2]))
    return out[0], out[1], out[2]


class SparseLabels:
    """A pick set seen as a [ni, nx, ns] label volume (-1 = no pick), without making the volume.

    Answers the three slice forms the figures take: v[i], v[:, x], v[:, :, s].
    """

    def __init__(self, shape: tuple[int, int, int], positions: np.ndarray, classes: np.ndarray) -> None:
        self.shape, self.ndim = shape, 3
        self.coords, self.classes = positions.T, classes

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        axis, index = len(key) - 1, int(key[-1])
        keep = self.coords[axis] == index
        a, b = (k for k in range(3) if k != axis)
        out = np.full((self.shape[a], self.shape[b]), -1, dtype=np.int16)
        out[self.coords[a][keep], self.coords[b][keep]] = self.classes[keep]
        return out


def _section(volume: np.ndarray, kind: str, index: int) -> np.ndarray:
    """The 2D slice, oriented for display: rows = time (sections) or inline (time slices)."""
    if kind == "inline":
        return np.asarray(volume[index]).T
    if kind == "crossline":
        return np.asarray(volume[:, index]).T
    return np.asarray(volume[:, :, index])


def _extent(axes: SurveyAxes, kind: str) -> tuple[list[float], str, str]:
    """imshow extent (pixel edges in real units) and the axis labels of a slice kind."""
    def edges(v: np.ndarray) -> tuple[float, float]:
        half = (v[1] - v[0]) / 2 if len(v) > 1 else 0.5
        return float(v[0] - half), float(v[-1] + half)

    time_label = f"{axes.sample_name} ({axes.sample_unit})"
    if kind == "time":
        x0, x1 = edges(axes.crosslines)
        y0, y1 = edges(axes.inlines)
        return [x0, x1, y1, y0], "crossline", "inline"
    x0, x1 = edges(axes.crosslines if kind == "inline" else axes.inlines)
    t0, t1 = edges(axes.samples)
    return [x0, x1, t1, t0], ("crossline" if kind == "inline" else "inline"), time_label


def slice_figure(out_path: str | Path, seismic: np.ndarray, axes: SurveyAxes, kind: str, value: float, *,
                 prediction: np.ndarray | None = None, confidence: np.ndarray | None = None,
                 ground_truth: np.ndarray | None = None, picks: np.ndarray | None = None,
                 class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Draw one slice (kind 'inline', 'crossline' or 'time' at line number / time `value`) as a PNG.

    Layers are [ni, nx, ns] volumes on the survey grid: prediction and ground_truth class labels, confidence in
    [0, 1], picks a sparse label volume (-1 = no pick) drawn as dots over the seismic. Panels appear for the
    layers given. Returns the path written.
    """
    if kind not in SLICE_KINDS:
        raise FigureError(f"slice kind must be one of {SLICE_KINDS}, got {kind!r}")
    index = axes.index(kind, value)
    n_classes = _n_classes(class_names, prediction, ground_truth, picks)
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(n_classes)]
    # With no class layer a single dummy class keeps the colour map valid; no legend is drawn then.
    cmap = class_cmap(max(n_classes, 1))
    norm = BoundaryNorm(np.arange(max(n_classes, 1) + 1) - 0.5, max(n_classes, 1))
    extent, xlabel, ylabel = _extent(axes, kind)
    panels = [("seismic" + (" and picks" if picks is not None else ""), None)]
    panels += [(name, layer) for name, layer in (("prediction", prediction), ("confidence", confidence),
                                                 ("ground truth", ground_truth)) if layer is not None]
    fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.5, 5.0), squeeze=False,
                            sharex=True, sharey=True, constrained_layout=True)
    for ax, (name, layer) in zip(axs[0], panels):
        if layer is None:
            _draw_seismic(ax, _section(seismic, kind, index), extent, picks, kind, index, cmap, norm)
        elif name == "confidence":
            im = ax.imshow(_section(layer, kind, index), cmap="viridis", vmin=0, vmax=1, extent=extent,
                           aspect="auto", interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8, label="top-1 minus top-2 probability")
        else:
            labels = np.ma.masked_less(_section(layer, kind, index).astype(np.int64), 0)
            ax.imshow(labels, cmap=cmap, norm=norm, extent=extent, aspect="auto", interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        # Line numbers are integers; few ticks so neighbouring panels' labels do not collide.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        if kind == "time":
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    axs[0][0].set_ylabel(ylabel)
    if n_classes:
        handles = [Patch(color=cmap(k), label=names[k]) for k in range(n_classes)]
        fig.legend(handles=handles, loc="outside right center", title="classes")
    default = f"{axes.sample_name} slice {value:g} {axes.sample_unit}" if kind == "time" else f"{kind} {value:g}"
    fig.suptitle(title or default)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _n_classes(class_names, *layers) -> int:
    if class_names is not None:
        return len(class_names)
    highest = [int(np.max(layer)) for layer in layers if layer is not None and np.size(layer)]
    return max(highest) + 1 if highest else 0


def _draw_seismic(ax, section: np.ndarray, extent, picks, kind: str, index: int, cmap, norm) -> None:
    clip = float(np.percentile(np.abs(section), 99)) or 1.0
    ax.imshow(section, cmap="gray", vmin=-clip, vmax=clip, extent=extent, aspect="auto", interpolation="bilinear")
    if picks is None:
        return
    labels = _section(picks, kind, index)
    rows, cols = np.nonzero(labels >= 0)
    # Pixel centres in real units: the extent spans pixel edges.
    x = extent[0] + (cols + 0.5) * (extent[1] - extent[0]) / labels.shape[1]
    y = extent[3] + (rows + 0.5) * (extent[2] - extent[3]) / labels.shape[0]
    ax.scatter(x, y, c=labels[rows, cols], cmap=cmap, norm=norm, s=4, marker="s", linewidths=0)


def slice_figures(out_dir: str | Path, seismic: np.ndarray, axes: SurveyAxes,
                  slices: Mapping[str, Sequence[float]], **layers) -> list[Path]:
    """One PNG per chosen slice, e.g. slices={'inline': [120], 'crossline': [880], 'time': [200]}.

    Files are named <kind>_<value>.png in out_dir; `layers` are passed to slice_figure.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = set(slices) - set(SLICE_KINDS)
    if unknown:
        raise FigureError(f"unknown slice kinds {sorted(unknown)}; use {SLICE_KINDS}")
    return [slice_figure(out_dir / f"{kind}_{value:g}.png", seismic, axes, kind, value, **layers)
            for kind, values in slices.items() for value in values]
