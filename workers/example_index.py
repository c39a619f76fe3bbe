"""What a train job reads of its example sets before any batch: classes, sources, positions, normalisation.

``read_sets`` opens each set's small arrays (y, source, position; never x) and joins them into one ``SetIndex``:
one class list (workers.examples.class_union, the same union extract makes), one list of source surveys (a survey
that two sets were extracted from is one source: the blocked split and the normalisation treat it once), and per
example its set, row, class, source survey, grid position and the (mean, std) per channel of its source survey,
as the set recorded it at extraction. The train job's submit check (daemon/kinds/train_sets.py) and its
executor (daemon/executor/training/set_data.py) both read the sets through here, so they refuse the same things
with the same words.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from workers.crops import CropSpec
from workers.examples import ExampleSetError, class_union, info


@dataclass
class SetIndex:
    names: list[str]                  # set names, in the job's order
    files: list[str]
    classes: list[str]                # the union, first-seen order
    label_maps: list[np.ndarray]      # per set: its class ids -> union ids
    surveys: list[dict[str, Any]]     # per source survey: name, sets, volumes [{name, mean, std, stats}]
    set_of: np.ndarray                # [M] per example
    row_of: np.ndarray
    labels: np.ndarray                # union class ids
    survey_of: np.ndarray             # index into surveys
    positions: np.ndarray             # [M, 3] grid indices in its survey
    norm: np.ndarray                  # [M, C, 2] (mean, std) of its survey, per channel
    has_labels: list[bool]            # per set: holds the label crops segmentation trains on

    def trained_on(self) -> dict[str, Any]:
        """The model file's record of its training data (ModelInfo.trained_on)."""
        return {"sets": [{"name": n, "surveys": [s["name"] for s in self.surveys if n in s["sets"]]}
                         for n in self.names],
                "surveys": [{"name": s["name"], "examples": int((self.survey_of == k).sum()),
                             "volumes": [{k2: v[k2] for k2 in ("name", "mean", "std")} for v in s["volumes"]]}
                            for k, s in enumerate(self.surveys)]}


def _std(stats: dict[str, Any]) -> float:
    std = float(stats.get("std") or 0.0)
    return std if std > 0 else 1.0


def read_sets(paths: list[tuple[str, Path]], crop: CropSpec, channels: int) -> SetIndex:
    """Join the sets (name, path) for a job with this crop and channel count; ExampleSetError names what is wrong."""
    metas, arrays = [], []
    for name, path in paths:
        meta = info(path).meta
        want = crop.to_dict()
        have = {"size": list(meta.get("crop", {}).get("size", [])),
                "orientation": meta.get("crop", {}).get("orientation", "inline")}
        if have != want:
            raise ExampleSetError(f"example set {name!r} holds crops {have['size']} ({have['orientation']}); this "
                                  f"job's data.crop is {want['size']} ({want['orientation']}): extract the set "
                                  "again with the job's crop, or give the job the set's crop")
        vols = list(meta.get("volumes", []))
        if len(vols) != channels:
            raise ExampleSetError(f"example set {name!r} has {len(vols)} channel(s) (volumes {vols}); this job's "
                                  f"data.volumes gives {channels}: they must agree")
        with h5py.File(path, "r") as h5:
            arrays.append((h5["y"][:].astype(np.int64), h5["source"][:].astype(np.int64),
                           h5["position"][:].astype(np.int64), "labels" in h5))
        metas.append(meta)
    classes, maps = class_union([list(m["class_names"]) for m in metas])
    surveys: list[dict[str, Any]] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("set", "row", "label", "survey", "pos", "norm")}
    for s, ((name, _), meta, (y, source, pos, _)) in enumerate(zip(paths, metas, arrays)):
        local = []  # this set's source index -> the job's survey index
        for k, src in enumerate(meta["surveys"]):
            known = next((j for j, sv in enumerate(surveys) if sv["name"] == src["name"]), None)
            stats = meta["normalisation"][k]
            if known is None:
                surveys.append({"name": src["name"], "sets": [], "volumes": [
                    {"name": v, "mean": float(stats[v]["mean"]), "std": _std(stats[v]), "stats": stats[v]}
                    for v in src["volumes"]]})
                known = len(surveys) - 1
            if name not in surveys[known]["sets"]:
                surveys[known]["sets"].append(name)
            local.append(known)
        local_a = np.asarray(local, dtype=np.int64)
        norm = np.array([[(v["mean"], v["std"]) for v in sv["volumes"]] for sv in surveys], dtype=np.float64)
        parts["set"].append(np.full(len(y), s, np.int64))
        parts["row"].append(np.arange(len(y), dtype=np.int64))
        parts["label"].append(maps[s][y].astype(np.int64))
        parts["survey"].append(local_a[source])
        parts["pos"].append(pos.reshape(-1, 3))
        parts["norm"].append(norm[local_a[source]].reshape(len(y), channels, 2))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    if not len(cat["label"]):
        raise ExampleSetError(f"example set(s) {', '.join(repr(n) for n, _ in paths)} hold no examples")
    return SetIndex(names=[n for n, _ in paths], files=[str(p) for _, p in paths], classes=classes,
                    label_maps=[m.astype(np.int64) for m in maps], surveys=surveys, set_of=cat["set"],
                    row_of=cat["row"], labels=cat["label"], survey_of=cat["survey"], positions=cat["pos"],
                    norm=cat["norm"], has_labels=[a[3] for a in arrays])
