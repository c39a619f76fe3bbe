"""The example-set page (/examples?set=NAME&index=K): one example's input crop, as three orthogonal slices for 3D
crops or as the image for 2D crops, with sliders for example, channel and slice positions, and the class name.

The axes carry the inline and crossline numbers and the times (or depths) the crop was cut from, read from its
source survey's geometry (the set's meta names the survey's folder); a crop whose survey is gone is drawn on crop
indices, and says so. Only the shown example is read (x[index], one HDF5 chunk), so a set of any size opens at once.
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

from daemon.common.home import example_set_file, examples_folder, survey_folder
from daemon.viewers.panels import PALETTES, Axis, SlicePanel, sample_label
from workers.survey import Survey, SurveyError

AXIS_NAMES = ("inline", "crossline", "sample")
CROP_AXES = {"inline": (1, 2), "crossline": (0, 2), "time": (0, 1), "3d": (0, 1, 2)}


def slider(title: str, count: int, value: int = 0) -> Slider:
    """An index slider over 0..count-1 (disabled when there is only one value: Bokeh needs start < end)."""
    return Slider(title=title, start=0, end=max(count - 1, 1), value=min(value, max(count - 1, 0)), step=1,
                  disabled=count <= 1)


def query(doc: Document, key: str) -> str | None:
    """A query-string argument of the page's URL."""
    ctx = doc.session_context
    values = ctx.request.arguments.get(key) if ctx is not None and ctx.request is not None else None
    return values[0].decode() if values else None


class ExampleSetPage:
    """Widgets and panels of one browser session of /examples."""

    def __init__(self, doc: Document, home: Path):
        self.home = home
        self.folder = examples_folder(home)
        names = sorted(p.stem for p in self.folder.glob("*.h5"))
        wanted = query(doc, "set")
        self.choice = Select(title="example set", options=names or ["(none)"],
                             value=wanted if wanted in names else (names[0] if names else "(none)"))
        self.palette = Select(title="palette", options=list(PALETTES), value="seismic")
        self.zoom = Slider(title="zoom (pixels per sample)", start=1, end=12, value=6, step=1)
        self.info = Div(text="", width=420)
        self.layout = column(row(self.choice, self.palette, self.zoom), self.info, name="examples")
        doc.add_root(self.layout)
        doc.title = "seisd example sets"
        self.h5: h5py.File | None = None
        self._surveys: dict[int, list[Axis] | None] = {}  # source survey axes, by the set's source index
        doc.on_session_destroyed(lambda ctx: self.h5.close() if self.h5 is not None else None)
        self.choice.on_change("value", lambda attr, old, new: self.open(new, 0))
        self.palette.on_change("value", lambda attr, old, new: [p.set_palette(new) for p in self.panels])
        self.zoom.on_change("value", lambda attr, old, new: [p.set_zoom(new) for p in self.panels])
        self.panels: list[SlicePanel] = []
        index = query(doc, "index")
        self.open(self.choice.value, int(index) if index and index.isdigit() else 0)

    def open(self, name: str, index: int) -> None:
        """Show set `name` from example `index`: rebuild the sliders and panels for its crop shape."""
        if self.h5 is not None:
            self.h5.close()
        path = example_set_file(self.home, name)
        if not path.is_file():
            self.layout.children = self.layout.children[:2]
            self.info.text = f"<b>no example set</b> {name!r} in {self.folder}: extract one first"
            return
        self.h5 = h5py.File(path, "r")
        self.meta = json.loads(self.h5.attrs["meta"])
        self._surveys = {}
        self.x, n = self.h5["x"], int(self.h5["y"].shape[0])
        self.crop_axes = CROP_AXES[self.meta["crop"]["orientation"]]
        shape = self.x.shape[2:]
        self.index = slider("example", n, index)
        self.channel = slider(f"channel ({', '.join(self.meta.get('volumes', []))})", self.x.shape[1])
        self.positions = [slider(f"{AXIS_NAMES[a]} slice", shape[k], shape[k] // 2)
                          for k, a in enumerate(self.crop_axes)] if len(shape) == 3 else []
        self.panels = self._make_panels()
        for w in [self.index, self.channel, *self.positions]:
            w.on_change("value", lambda attr, old, new: self.draw())
        controls = column(self.index, self.channel, *self.positions)
        self.layout.children = [self.layout.children[0], self.info, row(controls, *[p.fig for p in self.panels])]
        self.draw()

    def _make_panels(self) -> list[SlicePanel]:
        axes = self.crop_axes
        if len(axes) == 2:
            pairs = [(None, axes)]
        else:  # the slice across crop axis k shows the other two
            pairs = [(k, tuple(a for j, a in enumerate(axes) if j != k)) for k in range(3)]
        panels = []
        for k, (u, v) in pairs:
            title = "crop" if k is None else f"{AXIS_NAMES[axes[k]]} slice"
            panels.append(SlicePanel(title, Axis(AXIS_NAMES[u]), Axis(AXIS_NAMES[v], down=v == 2),
                                     palette=self.palette.value))
        return panels

    def survey_axes(self, source: int) -> list[Axis] | None:
        """Inline, crossline and sample axes of the set's source survey `source`; None when it cannot be opened."""
        if source not in self._surveys:
            entry = (self.meta.get("surveys") or [{}])[source] if source < len(self.meta.get("surveys") or []) else {}
            found = None
            for folder in (entry.get("folder"), survey_folder(self.home, entry["name"]) if "name" in entry else None):
                try:
                    found = Survey.open(folder, sync=False) if folder else None
                except SurveyError:
                    continue
                if found is not None:
                    break
            self._surveys[source] = None if found is None else [
                Axis.of_values("inline", found.inlines), Axis.of_values("crossline", found.crosslines),
                Axis.of_values(sample_label(found.geometry.sample_unit), found.samples, down=True)]
        return self._surveys[source]

    def _crop_axes(self, survey: list[Axis] | None, centre: list[int]) -> list[Axis]:
        """The crop's own axes in survey terms: its window starts size // 2 cells before the centre (workers.crops)."""
        size = self.x.shape[2:]
        if survey is None or len(centre) != 3:
            return [Axis(f"{AXIS_NAMES[a]} (crop index)", down=a == 2) for a in self.crop_axes]
        return [survey[a].shifted(centre[a] - size[k] // 2) for k, a in enumerate(self.crop_axes)]

    def draw(self) -> None:
        """Read the chosen example (one chunk) and redraw every panel on the axes it was cut from."""
        i, c = int(self.index.value), int(self.channel.value)
        crop = np.asarray(self.x[i, c])
        y = int(self.h5["y"][i])
        names = self.meta.get("class_names", [])
        label = names[y] if 0 <= y < len(names) else f"class {y}"
        pos = [int(v) for v in self.h5["position"][i]] if "position" in self.h5 else []
        src = int(self.h5["source"][i]) if "source" in self.h5 else 0
        survey = self.meta.get("surveys", [{}])[src].get("name", "?") if self.meta.get("surveys") else "?"
        full = self.survey_axes(src)
        axes = self._crop_axes(full, pos)
        where = (", ".join(f"{full[a].label.split()[0]} {full[a].value(p):g}" for a, p in enumerate(pos))
                 if full is not None and len(pos) == 3 else f"(inline, crossline, sample) index {pos}; its survey "
                 "cannot be opened, so the axes are crop indices")
        self.info.text = (f"<b>example {i}</b> of {self.x.shape[0]}: class <b>{label}</b> (id {y}); survey "
                          f"{survey}, centre {where}; crop {self.meta['crop']['orientation']} "
                          f"{list(self.x.shape[2:])}")
        if not self.positions:
            self.panels[0].set_axes(*axes)
            self.panels[0].show(crop, f"example {i}: {label}")
        else:
            for k, panel in enumerate(self.panels):
                at = int(self.positions[k].value)
                u, v = (axes[j] for j in range(3) if j != k)
                panel.set_axes(u, v)
                line = f"{axes[k].label.split()[0]} {axes[k].value(at):g}"
                self.positions[k].title = f"{line} (crop index {at})"
                panel.show(np.take(crop, at, axis=k), f"{line}: {label}")
        for p in self.panels:
            p.set_palette(self.palette.value)
            p.set_zoom(self.zoom.value)


def make_document(home: Path) -> Any:
    """The Bokeh handler for /examples."""
    def build(doc: Document) -> None:
        ExampleSetPage(doc, home)
    return build
