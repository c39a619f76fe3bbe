"""The survey page (/survey?name=S&prediction=P&picks=Q): inline, crossline and time slices of a survey volume with
picks and a chosen prediction drawn over the seismic, and a slider per line.

Only the three shown slices are read from the memory-mapped volume (and from the prediction), so a survey of any
size opens at once; moving a slider reads one more slice.

Predictions live in <home>/predictions/<name>/: labels.npy ([ni, nx, ns] integer memmap) or an HDF5 file with a
`labels` dataset of that shape (class names from its `class_names` attribute when present).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Div, Select, Slider

from daemon.common.home import prediction_folder, predictions_folder, survey_folder, surveys_folder
from daemon.viewers.examples_page import query, slider
from daemon.viewers.panels import PALETTES, SlicePanel, class_colors
from workers.picks import PickSet, PicksError, pick_set_names
from workers.survey import Survey, SurveyError

NONE = "(none)"


class PredictionError(ValueError):
    """A prediction folder holding no labels this viewer can read; the message says what it looked for."""


def open_labels(folder: Path) -> tuple[Any, list[str], Any]:
    """(labels array-like [ni, nx, ns], class names, file to close or None) of a prediction folder."""
    npy = folder / "labels.npy"
    if npy.is_file():
        names = []
        meta = folder / "meta.json"
        if meta.is_file():
            names = list(json.loads(meta.read_text()).get("class_names", []))
        return np.load(npy, mmap_mode="r"), names, None
    for path in sorted(folder.glob("*.h5")):
        f = h5py.File(path, "r")
        if "labels" in f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs.get("class_names", [])]
            return f["labels"], names, f
        f.close()
    raise PredictionError(f"{folder} holds no labels.npy and no HDF5 file with a 'labels' dataset")


class SurveyPage:
    """Widgets and panels of one browser session of /survey."""

    def __init__(self, doc: Document, home: Path):
        self.home = home
        names = sorted(p.parent.name for p in surveys_folder(home).glob("*/survey.json"))
        wanted = query(doc, "name")
        self.choice = Select(title="survey", options=names or [NONE],
                             value=wanted if wanted in names else (names[0] if names else NONE))
        self.volume = Select(title="volume", options=[NONE], value=NONE)
        self.prediction = Select(title="prediction", options=[NONE], value=NONE)
        self.picks = Select(title="picks", options=[NONE], value=NONE)
        self.palette = Select(title="palette", options=list(PALETTES), value="greys")
        self.opacity = Slider(title="prediction opacity", start=0, end=1, value=0.45, step=0.05)
        self.zoom = Slider(title="zoom (pixels per sample)", start=0.25, end=4, value=1, step=0.25)
        self.info = Div(text="", width=900)
        self.problem = ""  # the last thing that could not be shown, kept above the description
        self.panels = [SlicePanel("inline", "crossline", "sample", True), SlicePanel("crossline", "inline",
                       "sample", True), SlicePanel("time slice", "inline", "crossline", False)]
        self.lines = [slider("inline", 1), slider("crossline", 1), slider("time", 1)]
        self.labels: Any = None
        self.class_names: list[str] = []
        self._h5: Any = None
        self.pickset: PickSet | None = None
        doc.title = "seisd surveys"
        doc.add_root(column(row(self.choice, self.volume, self.prediction, self.picks),
                            row(self.palette, self.opacity, self.zoom), self.info, row(*self.lines),
                            row(*[p.fig for p in self.panels]), name="survey"))
        doc.on_session_destroyed(lambda ctx: self._close())
        self._wire()
        self.open_survey(self.choice.value, query(doc, "prediction"), query(doc, "picks"))

    def _wire(self) -> None:
        self.choice.on_change("value", lambda a, o, n: self.open_survey(n, None, None))
        self.volume.on_change("value", lambda a, o, n: self.draw_all())
        self.prediction.on_change("value", lambda a, o, n: self.open_prediction(n))
        self.picks.on_change("value", lambda a, o, n: self.open_picks(n))
        self.palette.on_change("value", lambda a, o, n: [p.set_palette(n) for p in self.panels])
        self.opacity.on_change("value", lambda a, o, n: self._set_opacity(n))
        self.zoom.on_change("value", lambda a, o, n: [p.set_zoom(n) for p in self.panels])
        for k, s in enumerate(self.lines):
            s.on_change("value", lambda a, o, n, k=k: self.draw(k))

    def _close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def open_survey(self, name: str, prediction: str | None, picks: str | None) -> None:
        try:
            self.survey = Survey.open(survey_folder(self.home, name))
        except SurveyError as exc:
            self.info.text = f"<b>no survey to show</b>: {exc}"
            return
        self.volume.options = self.survey.volumes or [NONE]
        self.volume.value = "seismic" if "seismic" in self.survey.volumes else self.volume.options[0]
        preds = sorted(p.name for p in predictions_folder(self.home).glob("*") if p.is_dir())
        self.prediction.options = [NONE, *preds]
        pick_sets = pick_set_names(self.survey.folder)
        self.picks.options = [NONE, *pick_sets]
        for s, n in zip(self.lines, self.survey.shape):
            s.end, s.disabled = max(n - 1, 1), n <= 1
            s.value = n // 2
        self.pickset = None
        self.picks.value = picks if picks in pick_sets else NONE
        self.open_picks(self.picks.value)
        self.prediction.value = prediction if prediction in preds else NONE
        self.open_prediction(self.prediction.value)

    def open_prediction(self, name: str) -> None:
        self._close()
        self.problem = ""
        self.labels, self.class_names = None, []
        if name != NONE:
            try:
                self.labels, self.class_names, self._h5 = open_labels(prediction_folder(self.home, name))
            except (PredictionError, OSError) as exc:
                self.problem = f"<b>prediction {name!r} cannot be shown</b>: {exc}"
            if self.labels is not None and tuple(self.labels.shape) != tuple(self.survey.shape):
                self.problem = (f"<b>prediction {name!r} has shape {list(self.labels.shape)}</b>, the survey "
                                  f"{list(self.survey.shape)}: it belongs to another survey")
                self._close()
                self.labels = None
        self.draw_all()

    def open_picks(self, name: str) -> None:
        self.pickset = None
        if name != NONE:
            try:
                self.pickset = PickSet.load(self.survey.folder, name)
            except PicksError as exc:
                self.problem = f"<b>picks {name!r} cannot be shown</b>: {exc}"
        self.draw_all()

    def _set_opacity(self, value: float) -> None:
        for p in self.panels:
            p.overlay_glyph.glyph.global_alpha = value

    def draw_all(self) -> None:
        for k in range(3):
            self.draw(k)
        self._describe()

    def draw(self, axis: int) -> None:
        """Read one slice across `axis` (0 inline, 1 crossline, 2 sample) and redraw its panel."""
        if self.volume.value == NONE:
            return
        k = int(self.lines[axis].value)
        cut = (slice(None),) * axis + (k,)
        axis_values = (self.survey.inlines, self.survey.crosslines, self.survey.samples)[axis]
        name = ("inline", "crossline", "time")[axis]
        panel = self.panels[axis]
        panel.show(np.asarray(self.survey.volume(self.volume.value)[cut]), f"{name} {axis_values[k]:g}")
        self.lines[axis].title = f"{name} {axis_values[k]:g} (index {k})"
        n_classes = len(self.class_names) or 10  # without names: ids 0..9 get distinct colours
        panel.show_classes(None if self.labels is None else np.asarray(self.labels[cut]), n_classes)
        panel.overlay_glyph.glyph.global_alpha = self.opacity.value
        panel.set_palette(self.palette.value)
        panel.set_zoom(self.zoom.value)
        self._draw_picks(axis, k)

    def _draw_picks(self, axis: int, k: int) -> None:
        ps = self.pickset
        if ps is None or len(ps) == 0:
            self.panels[axis].show_points(np.zeros(0), np.zeros(0), np.zeros(0, int), [])
            return
        pos = ps.positions()
        on = pos[:, axis] == k
        u, v = [a for a in range(3) if a != axis]
        self.panels[axis].show_points(pos[on, u], pos[on, v], ps.cls[on], ps.class_names)

    def _describe(self) -> None:
        s = self.survey
        parts = [self.problem] if self.problem else []
        parts += [f"<b>{s.name}</b>: {s.shape[0]} inlines x {s.shape[1]} crosslines x {s.shape[2]} samples"]
        if self.labels is not None:
            colors = class_colors(max(len(self.class_names), 1))
            legend = " ".join(f"<span style='color:{colors[i]}'>&#9632;</span> {n}"
                              for i, n in enumerate(self.class_names)) or "class ids"
            parts.append(f"prediction <b>{self.prediction.value}</b>: {legend}")
        if self.pickset is not None:
            parts.append(f"picks <b>{self.picks.value}</b>: {len(self.pickset)} points {self.pickset.counts()}")
        self.info.text = "<br>".join(parts)


def make_document(home: Path) -> Any:
    """The Bokeh handler for /survey."""
    def build(doc: Document) -> None:
        SurveyPage(doc, home)
    return build
