"""The survey page (/survey?name=S&prediction=P&picks=Q&palette=greys): inline, crossline and time slices of a survey
volume with picks and a chosen prediction or label volume drawn over the seismic, and a slider per line.

Every axis is in the survey's own terms: inline and crossline numbers, time in ms (or depth in m); the amplitudes
have a colour bar and a diverging palette. Only the three shown slices are read from the memory-mapped volume (and
from the labels), so a survey of any size opens at once; moving a slider reads one more slice. The labels drawn
over the seismic are a prediction in any format the predict job writes, or a label volume of the survey
(daemon/viewers/labels.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Div, Select, Slider

from daemon.common.home import predictions_folder, survey_folder, surveys_folder
from daemon.common.palette import class_colours
from daemon.viewers.examples_page import query, slider
from daemon.viewers.labels import VOLUME_PREFIX, Labels, LabelsError, label_volume_names, open_labels
from daemon.viewers.panels import PALETTES, Axis, SlicePanel, sample_label
from workers.picks import PickSet, PicksError, pick_set_names
from workers.survey import Survey, SurveyError

NONE = "(none)"
LINE_NAMES = ("inline", "crossline", "time")


class SurveyPage:
    """Widgets and panels of one browser session of /survey."""

    def __init__(self, doc: Document, home: Path):
        self.home = home
        names = sorted(p.parent.name for p in surveys_folder(home).glob("*/survey.json"))
        wanted = query(doc, "name")
        self.choice = Select(title="survey", options=names or [NONE],
                             value=wanted if wanted in names else (names[0] if names else NONE))
        self.volume = Select(title="volume", options=[NONE], value=NONE)
        self.prediction = Select(title="prediction or label volume", options=[NONE], value=NONE)
        self.picks = Select(title="picks", options=[NONE], value=NONE)
        palette = query(doc, "palette")
        self.palette = Select(title="palette", options=list(PALETTES),
                              value=palette if palette in PALETTES else "seismic")
        self.opacity = Slider(title="prediction opacity", start=0, end=1, value=0.45, step=0.05)
        self.zoom = Slider(title="zoom (pixels per sample)", start=0.25, end=4, value=1, step=0.25)
        self.info = Div(text="", width=900)
        self.problem = ""  # the last thing that could not be shown, kept above the description
        self.panels = [SlicePanel("inline", Axis("crossline"), Axis("time", down=True)),
                       SlicePanel("crossline", Axis("inline"), Axis("time", down=True)),
                       SlicePanel("time slice", Axis("inline"), Axis("crossline"))]
        self.lines = [slider(name, 1) for name in LINE_NAMES]
        self.labels: Labels | None = None
        self.class_names: list[str] = []
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
        if self.labels is not None:
            self.labels.close()
            self.labels = None

    def open_survey(self, name: str, prediction: str | None, picks: str | None) -> None:
        try:
            self.survey = Survey.open(survey_folder(self.home, name), sync=False)
        except SurveyError as exc:
            self.info.text = f"<b>no survey to show</b>: {exc}"
            return
        s = self.survey
        self.volume.options = s.volumes or [NONE]
        self.volume.value = "seismic" if "seismic" in s.volumes else self.volume.options[0]
        preds = sorted(p.name for p in predictions_folder(self.home).glob("*") if p.is_dir())
        self.prediction.options = [NONE, *preds, *(VOLUME_PREFIX + v for v in label_volume_names(s))]
        il, xl = Axis.of_values("inline", s.inlines), Axis.of_values("crossline", s.crosslines)
        t = Axis.of_values(sample_label(s.geometry.sample_unit), s.samples, down=True)
        for panel, (u, v) in zip(self.panels, ((xl, t), (il, t), (il, xl))):
            panel.set_axes(u, v)
        for sl, n in zip(self.lines, s.shape):
            sl.end, sl.disabled = max(n - 1, 1), n <= 1
            sl.value = n // 2
        pick_sets = pick_set_names(s.folder)
        self.picks.options = [NONE, *pick_sets]
        self.pickset = None
        self.picks.value = picks if picks in pick_sets else NONE
        self.open_picks(self.picks.value)
        self.prediction.value = prediction if prediction in self.prediction.options else NONE
        self.open_prediction(self.prediction.value)

    def open_prediction(self, name: str) -> None:
        self._close()
        self.problem = ""
        self.class_names = []
        if name != NONE:
            try:
                self.labels = open_labels(predictions_folder(self.home), name, self.survey)
                self.class_names = self.labels.class_names
            except (LabelsError, SurveyError, OSError) as exc:
                self.problem = f"<b>{name!r} cannot be shown</b>: {exc}"
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
        s = self.survey
        value, unit = (s.inlines, s.crosslines, s.samples)[axis][k], s.geometry.sample_unit
        name = (f"{LINE_NAMES[axis]} {value:g}" if axis < 2 else
                f"{sample_label(unit).split()[0]} {value:g} {unit}")
        panel = self.panels[axis]
        panel.show(np.asarray(s.volume(self.volume.value)[cut]), name)
        self.lines[axis].title = f"{name} (index {k})"
        n_classes = len(self.class_names) or 10  # without names: ids 0..9 get distinct colours
        panel.show_classes(None if self.labels is None else self.labels[cut], n_classes)
        panel.overlay_glyph.glyph.global_alpha = self.opacity.value
        panel.set_palette(self.palette.value)
        panel.set_zoom(self.zoom.value)
        self._draw_picks(axis, k)

    def _draw_picks(self, axis: int, k: int) -> None:
        ps = self.pickset
        if ps is None or len(ps) == 0:
            self.panels[axis].show_points(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [])
            return
        pos = ps.positions()
        on = pos[:, axis] == k
        u, v = [a for a in range(3) if a != axis]
        self.panels[axis].show_points(pos[on, u], pos[on, v], ps.cls[on], ps.class_names)

    def _describe(self) -> None:
        s = self.survey
        parts = [self.problem] if self.problem else []
        parts += [f"<b>{s.name}</b>: inlines {s.inlines[0]}-{s.inlines[-1]}, crosslines {s.crosslines[0]}-"
                  f"{s.crosslines[-1]}, {sample_label(s.geometry.sample_unit)} {s.samples[0]:g}-{s.samples[-1]:g} "
                  f"({s.shape[0]} x {s.shape[1]} x {s.shape[2]})"]
        if self.labels is not None:
            colors = class_colours(max(len(self.class_names), 1))
            legend = " ".join(f"<span style='color:{colors[i]}'>&#9632;</span> {n}"
                              for i, n in enumerate(self.class_names)) or "class ids"
            parts.append(f"<b>{self.prediction.value}</b>: {legend}")
        if self.pickset is not None:
            parts.append(f"picks <b>{self.picks.value}</b>: {len(self.pickset)} points {self.pickset.counts()}")
        self.info.text = "<br>".join(parts)


def make_document(home: Path) -> Any:
    """The Bokeh handler for /survey."""
    def build(doc: Document) -> None:
        SurveyPage(doc, home)
    return build
