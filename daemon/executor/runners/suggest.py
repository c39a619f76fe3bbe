"""The `suggest` job's runner: rank the survey's lines by how unsure the model's prediction is on them.

Uncertainty per voxel is one of three measures (the job's `measure`): 1 - confidence, confidence being the
prediction's top-1 minus top-2 probability (0: a tie between two classes, 1: certain); the disagreement between the
views the prediction blended (ensemble members, orientations; daemon/executor/predict/engine.py disagreement: 0 all
alike, 1 each sure of another class), which a predict job writes when its outputs include `disagreement`; or the
mean of the two. The volume is reduced once, inline by inline, to mean uncertainty per trace and sample
block; on that grid each line (an inline: crosslines x sample blocks; a crossline: inlines x sample blocks) gets
its most uncertain region, a window of `region` of its traces and `region_samples` of its samples, and the
region's mean uncertainty is the line's score. Lines and traces within `margin` of the survey's edge are left out
(rank_lines says why). With `near` > 0 what is already picked counts for less: each trace's uncertainty is
weighted by its lateral distance from the nearest trace of the pick set (`picks`, default the set the model was
trained from), 0 on a picked trace rising to 1 at `near` traces (pick_distance), so a region that re-covers the
picks is passed over for one the picks do not show; near 0, the default, leaves the uncertainty as it is. Lines
are ranked by score (ties: inlines first, lower index first); a line within `spacing` lines of a better one of its
kind is passed over, so the list does not name neighbours of one line. Everything is deterministic: the same
prediction gives the same list.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from daemon.common.home import prediction_folder, survey_folder
from daemon.kinds.suggest import SUGGEST_FOLDER, SuggestSpec, default_picks
from workers.picks import PickSet

SAMPLE_BLOCKS = 32  # the sample axis is reduced to at most this many blocks
MEASURE_TEXT = {"confidence": "1 - confidence (top-1 minus top-2 probability)",
                "disagreement": "disagreement between the views the prediction blended (members, orientations)",
                "both": "the mean of 1 - confidence and the views' disagreement"}


class PredictionVolumes:
    """Labels, confidence and (when the prediction has it) disagreement of a finished prediction, read lazily
    inline by inline (SEG-Y, else HDF5)."""

    def __init__(self, folder: Path, summary: dict[str, Any], survey: Any) -> None:
        paths = summary.get("paths") or {}
        self.shape = tuple(survey.shape)
        f4 = np.dtype(">f4" if survey.source.get("endian", "big") == "big" else "<f4")
        self.disagreement: Any = None
        if {"labels", "confidence"} <= set(paths):
            self.labels = _segy_memmap(Path(paths["labels"]), self.shape, np.dtype("i1"))
            self.confidence = _segy_memmap(Path(paths["confidence"]), self.shape, f4)
            if "disagreement" in paths:
                self.disagreement = _segy_memmap(Path(paths["disagreement"]), self.shape, f4)
        else:
            import h5py

            h5 = h5py.File(paths["hdf5"], "r")
            if "confidence" not in h5 or "labels" not in h5:
                raise RuntimeError(f"{paths['hdf5']} holds no confidence or no labels; predict again with "
                                   "outputs labels and confidence")
            self.labels, self.confidence = h5["labels"], h5["confidence"]
            self.disagreement = h5["disagreement"] if "disagreement" in h5 else None

    def uncertainty(self, measure: str, i: int) -> np.ndarray:
        """Per-voxel uncertainty of inline i as float64 [nx, ns]: 0 sure, 1 most unsure."""
        if measure == "disagreement":
            return np.asarray(self.disagreement[i], dtype=np.float64)
        u = 1.0 - np.asarray(self.confidence[i], dtype=np.float64)
        if measure == "both":
            u = (u + np.asarray(self.disagreement[i], dtype=np.float64)) / 2
        return u


def _segy_memmap(path: Path, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray:
    """[ni, nx, ns] view of the samples of a SEG-Y that write_like_survey wrote (every trace of the grid, inline
    by inline, headers of 240 bytes)."""
    ni, nx, ns = shape
    record = 240 + ns * dtype.itemsize
    head = path.stat().st_size - ni * nx * record
    if head < 3600 or (head - 3600) % 3200:
        raise RuntimeError(f"{path} does not hold the survey's {ni} x {nx} traces of {ns} samples; predict again")
    traces = np.memmap(path, dtype=np.dtype([("h", "V240"), ("d", dtype, (ns,))]), mode="r", offset=head,
                       shape=(ni * nx,))
    return traces["d"].reshape(ni, nx, ns)


def uncertainty_grid(inline: Callable[[int], np.ndarray], shape: tuple[int, int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mean uncertainty per (inline, crossline, sample block) as float64 [ni, nx, nb], from `inline(i)` (one
    inline's [nx, ns] uncertainty), and the blocks' first sample indices (nb + 1 edges)."""
    ni, nx, ns = shape
    nb = min(SAMPLE_BLOCKS, ns)
    edges = np.linspace(0, ns, nb + 1).round().astype(np.int64)
    grid = np.empty((ni, nx, nb), dtype=np.float64)
    for i in range(ni):
        grid[i] = np.add.reduceat(inline(i), edges[:-1], axis=1) / np.diff(edges)[None, :]
    return grid, edges


def pick_distance(picked: np.ndarray, cap: int) -> np.ndarray:
    """Lateral distance in traces from each trace of the [ni, nx] grid to the nearest True one, exact up to `cap`
    (farther, and on a grid with none: cap): per inline the distance along it, then the smallest g(i')^2 + (i -
    i')^2 over the inlines i' within cap (a truncated Euclidean distance transform; cap + 1 passes of the grid)."""
    ni, nx = picked.shape
    cols = np.arange(nx)
    far = nx + cap + 1
    before = np.maximum.accumulate(np.where(picked, cols, -far), axis=1)
    after = np.minimum.accumulate(np.where(picked, cols, 2 * far)[:, ::-1], axis=1)[:, ::-1]
    g2 = np.minimum(np.minimum(cols - before, after - cols), cap + 1).astype(np.float64) ** 2
    best = g2.copy()
    for di in range(1, min(cap, ni - 1) + 1):
        np.minimum(best[di:], g2[:-di] + di * di, out=best[di:])
        np.minimum(best[:-di], g2[di:] + di * di, out=best[:-di])
    return np.minimum(np.sqrt(best), cap)


def picked_weight(positions: np.ndarray, shape: tuple[int, ...], near: int) -> np.ndarray:
    """[ni, nx] weights of the traces: 0 on a trace holding a pick (positions: [N, >=2] inline and crossline
    indices inside the grid), rising linearly to 1 at `near` traces from the nearest one; near 0: all 1."""
    if near <= 0:
        return np.ones(shape[:2])
    if len(positions) and (positions[:, :2].min() < 0 or (positions[:, :2].max(0) >= shape[:2]).any()):
        raise ValueError(f"picks outside the survey's {shape[0]} x {shape[1]} traces")
    picked = np.zeros(shape[:2], dtype=bool)
    picked[positions[:, 0], positions[:, 1]] = True
    return pick_distance(picked, near) / near


def best_window(section: np.ndarray, width: int, height: int) -> tuple[float, int, int]:
    """(mean, first trace, first block) of the width x height window of highest mean; the first in row-major
    order among equals."""
    n, m = section.shape
    width, height = min(max(1, width), n), min(max(1, height), m)
    s = np.zeros((n + 1, m + 1))
    s[1:, 1:] = section.cumsum(0).cumsum(1)
    means = (s[width:, height:] - s[:-width, height:] - s[width:, :-height] + s[:-width, :-height]) / (width * height)
    a, b = np.unravel_index(int(np.argmax(means)), means.shape)
    return float(means[a, b]), int(a), int(b)


def margins(spec: SuggestSpec, shape: tuple[int, ...]) -> dict[str, int]:
    """Lines of each kind kept out at each edge of the survey: spec.margin or 1/16 of them (at least 2), always
    leaving at least one line."""
    out = {}
    for kind, count in (("inline", shape[0]), ("crossline", shape[1])):
        m = spec.margin if spec.margin is not None else max(2, count // 16)
        out[kind] = max(0, min(m, (count - 1) // 2))
    return out


def rank_lines(grid: np.ndarray, edges: np.ndarray, spec: SuggestSpec,
               weight: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Every candidate line with its region, ranked and thinned by spacing; the best `spec.lines` of them. With a
    [ni, nx] `weight` (picked_weight), the score is the region's mean of weighted uncertainty and `uncertainty` its
    mean of the grid's own; without, the two are the same.

    Lines within the margin of the survey's edge are no candidates and no region reaches into it: a model that
    sees a section's edge without what lies beyond is least sure there whatever it learnt, so the raw ranking
    named edge lines (inline 253 of 0-255, then crossline 255, then inline 255, on a 256^2 survey), and picks there
    teach the model about the edge rather than the survey."""
    ni, nx, nb = grid.shape
    margin = margins(spec, grid.shape)
    mi, mx = margin["inline"], margin["crossline"]
    inner = grid[mi:ni - mi, mx:nx - mx]
    ranked = inner if weight is None else inner * weight[mi:ni - mi, mx:nx - mx, None]
    height = max(1, int(round(spec.region_samples * nb)))
    candidates = []
    for kind in spec.kinds:
        count, lateral = (ni, nx) if kind == "inline" else (nx, ni)
        first, across = (mi, mx) if kind == "inline" else (mx, mi)
        width = max(1, int(round(spec.region * lateral)))
        for k in range(first, count - first):
            section = inner[k - mi] if kind == "inline" else inner[:, k - mx]
            score, t0, b0 = best_window(ranked[k - mi] if kind == "inline" else ranked[:, k - mx], width, height)
            region = section[t0:t0 + width, b0:b0 + height]
            candidates.append({"kind": kind, "index": k, "score": score, "uncertainty": float(region.mean()),
                               "line_mean": float(section.mean()),
                               "traces": [across + t0, across + t0 + min(width, section.shape[0]) - 1],
                               "samples": [int(edges[b0]), int(edges[min(b0 + height, nb)]) - 1]})
    candidates.sort(key=lambda c: (-round(c["score"], 12), c["kind"] != "inline", c["index"]))
    spacing = {kind: spec.spacing if spec.spacing is not None else max(2, (ni if kind == "inline" else nx) // 16)
               for kind in ("inline", "crossline")}
    chosen: list[dict[str, Any]] = []
    for c in candidates:
        if any(o["kind"] == c["kind"] and abs(o["index"] - c["index"]) <= spacing[c["kind"]] for o in chosen):
            continue
        chosen.append(c)
        if len(chosen) == spec.lines:
            break
    return chosen


def described(rows: list[dict[str, Any]], survey: Any) -> list[dict[str, Any]]:
    """Rows in the survey's own numbering: line numbers, the lateral extent as the other kind's numbers, times."""
    out = []
    for rank, r in enumerate(rows, 1):
        number = survey.inlines if r["kind"] == "inline" else survey.crosslines
        across = survey.crosslines if r["kind"] == "inline" else survey.inlines
        out.append({"rank": rank, "kind": r["kind"], "line": int(number[r["index"]]), "score": round(r["score"], 4),
                    "uncertainty": round(r["uncertainty"], 4), "line_mean": round(r["line_mean"], 4),
                    "across": "crossline" if r["kind"] == "inline" else "inline",
                    "from": int(across[r["traces"][0]]), "to": int(across[r["traces"][1]]),
                    "time_from": float(survey.samples[r["samples"][0]]),
                    "time_to": float(survey.samples[r["samples"][1]]),
                    "index": r["index"], "trace_indices": r["traces"], "sample_indices": r["samples"]})
    return out


def run_suggest_job(spec: SuggestSpec, ctx: Any) -> dict[str, Any]:
    from daemon.executor.runners.suggest_figure import draw_suggestions
    from workers.survey import Survey

    survey = Survey.open(survey_folder(ctx.home, spec.survey))
    folder = prediction_folder(ctx.home, spec.prediction)
    summary = json.loads((folder / "summary.json").read_text())
    volumes = PredictionVolumes(folder, summary, survey)
    measure = spec.measure
    if measure != "confidence" and volumes.disagreement is None:  # an HDF5 prediction: known only once opened
        raise RuntimeError(f"measure {measure!r} needs the prediction's disagreement output; predict again with "
                           "outputs labels,confidence,disagreement")
    ctx.progress(0.05, f"reading the prediction's {MEASURE_TEXT[measure]}")
    grid, edges = uncertainty_grid(lambda i: volumes.uncertainty(measure, i), survey.shape)
    ctx.check_cancel()
    near, picks, weight = spec.near, None, None
    if near > 0:
        picks = default_picks(spec, ctx.home)
        if picks is None:  # checked at submit; the set can go before the job runs
            raise RuntimeError(f"near {near}: model {spec.model!r} names no pick set of survey {spec.survey!r} "
                               "that the survey still has; give picks")
        ctx.progress(0.55, f"weighing by the distance from pick set {picks!r} (full at {near} traces)")
        weight = picked_weight(PickSet.load(survey_folder(ctx.home, spec.survey), picks).positions(),
                               survey.shape, near)
    ctx.progress(0.6, "ranking lines")
    rows = described(rank_lines(grid, edges, spec, weight), survey)
    out = folder / SUGGEST_FOLDER
    out.mkdir(exist_ok=True)
    doc = {"model": spec.model, "survey": spec.survey, "prediction": spec.prediction,
           "measure": measure, "measure_text": f"{MEASURE_TEXT[measure]}, mean over the region",
           "settings": {"region": spec.region, "region_samples": spec.region_samples, "spacing": spec.spacing,
                        "kinds": list(spec.kinds), "measure": spec.measure, "margin": spec.margin,
                        "picks": spec.picks, "near": spec.near},
           "margins": margins(spec, survey.shape), "picks": picks, "near": near,
           "sample_unit": survey.geometry.sample_unit, "classes": summary.get("classes"),
           "mean_uncertainty": round(float(grid.mean()), 4), "suggestions": rows}
    (out / "suggestions.json").write_text(json.dumps(doc, indent=1))
    columns = ["rank", "kind", "line", "score", "uncertainty", "line_mean", "across", "from", "to", "time_from",
               "time_to"]
    with open(out / "suggestions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([r[c] for c in columns] for r in rows)
    ctx.progress(0.7, "drawing")
    figure = draw_suggestions(out / "suggestions.png", rows, volumes, survey, list(summary.get("classes") or []),
                              f"{spec.model} on {spec.survey}: the least sure lines")
    files = {"json": str(out / "suggestions.json"), "csv": str(out / "suggestions.csv"), "png": str(figure)}
    ctx.log.info("suggested %s", ", ".join(f"{r['kind']} {r['line']} ({r['score']:.3f})" for r in rows))
    ctx.progress(1.0, "done")
    return {**{k: v for k, v in doc.items() if k != "settings"}, "files": files}
