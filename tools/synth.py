#!/usr/bin/env python3
"""Synthetic 3D seismic survey with known facies, for testing facies propagation end to end.

The model (tools/synth_model.py) is built in stratigraphic (paleo) depth z0 and then deformed: every present-day
sample (il, xl, z) looks up z0 = z - fold(il, xl) - fault_throw(il, xl, z), and both the label and the impedance
are functions of (il, xl, z0). Labels therefore move with the strata through folds and faults by construction.

Units are stacked along z0 with laterally varying thickness (some pinch out) and lateral facies changes, so the
class order changes across the survey; sinuous channels cut into unit tops and a salt-like body sits in the lower
part. Impedance per facies gives the texture; reflectivity is convolved with a Ricker wavelet and band-limited
noise is added. Everything is drawn from numpy generators seeded by `seed`, so a seed gives identical output.

`family="varied"` (tools/synth_varied.py) draws a different kind of survey per seed instead: 4 to 8 classes, folds
that grow with depth, 0 to 4 faults, several looks per class, its own noise and wavelet and pick coverage.

Run `python tools/synth.py OUT` to write seismic.sgy, labels.sgy, picks/<class>.pts and classes.json (docs/synth.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

import synth_varied
from synth_model import (LAYERED, Fault, convolve_traces, draw_layout, evaluate, fault_throw,  # noqa: F401
                         reflectivity, ricker)

GENERATOR_VERSION = 3

# name -> display colour; the order is the default class id order.
FACIES: dict[str, str] = {
    "parallel_high": "#1f4e9c",
    "parallel_low": "#9ecae1",
    "wavy": "#2ca02c",
    "chaotic": "#d62728",
    "clinoforms": "#ff7f0e",
    "channel_fill": "#ffd92f",
    "salt": "#7f3c8d",
}
MIN_CLASSES = 6
FAMILIES = ("classic", "varied")
# every class covers at least this share of the picks (a sliver cannot be learnt from); cubes under 96 crosslines or
# samples (tests) cannot fit seven classes that large on their picked part and keep the old 1.5 %
MIN_PICK_SHARE, MIN_PICK_SHARE_SMALL = 0.06, 0.015
_CHUNK = 16  # inlines evaluated at a time: keeps temporaries small and cache friendly


class SynthError(ValueError):
    """Bad generator options (the message names the option and what is accepted)."""



@dataclass(frozen=True)
class PickSet:
    """Interpreter-style picks as cube indices (one row per point) and their class ids."""

    inline_index: np.ndarray
    crossline_index: np.ndarray
    sample_index: np.ndarray
    class_id: np.ndarray


@dataclass
class SynthSurvey:
    """A generated survey: arrays are [inline, crossline, sample]."""

    seismic: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    inlines: np.ndarray
    crosslines: np.ndarray
    sample_interval_ms: float
    start_ms: float
    cdp_x: np.ndarray
    cdp_y: np.ndarray
    picks: PickSet
    faults: tuple[Fault, ...]
    seed: int
    noise: float
    meta: dict = field(default_factory=dict)
    looks: np.ndarray | None = None  # varied family: per voxel its texture look (synth_varied), else None

    @property
    def samples_ms(self) -> np.ndarray:
        """Two-way time of every sample in ms."""
        return self.start_ms + self.sample_interval_ms * np.arange(self.seismic.shape[2])

    def pick_table(self, class_id: int) -> np.ndarray:
        """Picks of one class as rows (inline number, crossline number, time in ms)."""
        p = self.picks
        sel = p.class_id == class_id
        return np.stack([self.inlines[p.inline_index[sel]], self.crosslines[p.crossline_index[sel]],
                         self.samples_ms[p.sample_index[sel]]], axis=1)


# ---------------------------------------------------------------- generate

def _check_options(shape: tuple[int, int, int], classes: Sequence[str], noise: float, n_faults: int,
                   sample_interval_ms: float, start_ms: float) -> None:
    if len(shape) != 3 or min(shape) < 32:
        raise SynthError(f"shape must be three sizes (inlines, crosslines, samples), each >= 32; got {shape}")
    unknown = [c for c in classes if c not in FACIES]
    if unknown:
        raise SynthError(f"unknown classes {unknown}; choose from {list(FACIES)}")
    if len(set(classes)) != len(classes) or len(classes) < MIN_CLASSES:
        raise SynthError(f"need at least {MIN_CLASSES} distinct classes, got {list(classes)}")
    if noise < 0:
        raise SynthError(f"noise is the noise/signal RMS ratio and must be >= 0, got {noise}")
    if not 0 <= n_faults <= 3:
        raise SynthError(f"n_faults must be 0..3, got {n_faults}")
    if sample_interval_ms <= 0 or round(sample_interval_ms * 1000) != sample_interval_ms * 1000:
        raise SynthError("sample_interval_ms must be a positive whole number of microseconds, "
                         f"got {sample_interval_ms}")
    if start_ms < 0 or start_ms != int(start_ms):
        raise SynthError(f"start_ms must be a whole number of ms >= 0 (SEG-Y delay), got {start_ms}")


def pick_region(shape: tuple[int, int, int]) -> tuple[int, tuple[int, int]]:
    """The classic family's labelled part: middle inline index, crossline indices [20%, 60%) of the range."""
    return shape[0] // 2, (int(0.2 * shape[1]), int(0.6 * shape[1]))


def survey_pick_region(survey: "SynthSurvey") -> tuple[int, tuple[int, int]]:
    """The picked part of a survey of either family: inline index and crossline index range [x0, x1)."""
    region = survey.meta.get("pick_region")
    return (region[0], tuple(region[1])) if region else pick_region(survey.labels.shape)


def colour_of(name: str) -> str:
    """Display colour of a class of either family."""
    if name in FACIES:
        return FACIES[name]
    return synth_varied.COLOURS[int(name.rsplit("_", 1)[1]) - 1]


def _covers_all(labels_line: np.ndarray, xl_range: tuple[int, int], n_classes: int) -> bool:
    counts = np.bincount(labels_line[xl_range[0]:xl_range[1]].ravel(), minlength=n_classes)
    share = MIN_PICK_SHARE if min(labels_line.shape) >= 96 else MIN_PICK_SHARE_SMALL
    return bool(np.all(counts >= max(5, share * counts.sum())))


def generate(shape: tuple[int, int, int] = (256, 256, 128), seed: int = 0, n_classes: int = len(FACIES),
             classes: Sequence[str] | None = None, noise: float = 0.2, n_faults: int = 2, peak_hz: float = 30.0,
             sample_interval_ms: float = 4.0, start_ms: float = 400.0, first_inline: int = 1000,
             inline_step: int = 1, first_crossline: int = 2000, crossline_step: int = 1,
             pick_sample_step: int = 1, structure: bool = True, family: str = "classic") -> SynthSurvey:
    """Generate a survey. `classes` (names from FACIES) overrides `n_classes` (the first n of FACIES); class ids
    are the positions of the names in sorted order. `structure=False` gives the sanity case: a flat layer cake
    (no folds, faults, thickness or lateral facies changes) with the same textures.

    The layout is redrawn (deterministically) until every class shows on the picked part of the middle inline.
    `family="varied"` draws classes, structure, noise, wavelet and pick coverage from the seed (tools/synth_varied.py):
    then `n_classes`, `classes`, `noise`, `n_faults`, `peak_hz` and `structure` are not used.
    """
    shape = tuple(int(s) for s in shape)
    lines = (first_inline, inline_step, first_crossline, crossline_step)
    if family == "varied":
        return _generate_varied(shape, seed, sample_interval_ms, start_ms, lines, pick_sample_step)
    if family != "classic":
        raise SynthError(f"family must be one of {list(FAMILIES)}, got {family!r}")
    # Class ids follow the SORTED names: a tool that reads picks/<name>.pts in sorted file order (seisctl picks
    # import with a shell glob, tools/demo.py) then gets the label volume's ids, and scores need no remapping.
    names = tuple(sorted(classes if classes is not None else list(FACIES)[:n_classes]))
    _check_options(shape, names, noise, n_faults, sample_interval_ms, start_ms)
    nil, nxl, ns = shape
    ids = {n: i for i, n in enumerate(names)}
    ref_il, xl_range = pick_region(shape)
    ref = (ref_il, (xl_range[0] + xl_range[1]) // 2)
    for attempt in range(60):
        lay = draw_layout(np.random.default_rng([seed, attempt]), ids, shape, n_faults, ref, xl_range, structure)
        # checked for every number of faults, so that n_faults never changes which layout is kept
        if all(_covers_all(evaluate(lay, np.array([ref_il]), nxl, ns, lay.candidates[:k])[0][0], xl_range,
                           len(ids)) for k in range(len(lay.candidates) + 1)):
            break
    else:
        raise SynthError(f"seed {seed}: no layout shows all {len(ids)} classes on the picked inline; "
                         "try another seed or a larger shape")
    labels = np.empty(shape, dtype=np.uint8)
    seismic = np.empty(shape, dtype=np.float32)
    wavelet = ricker(peak_hz, sample_interval_ms)
    for i0 in range(0, nil, _CHUNK):
        idx = np.arange(i0, min(nil, i0 + _CHUNK))
        labels[idx], imp = evaluate(lay, idx, nxl, ns)
        seismic[idx] = convolve_traces(reflectivity(imp), wavelet)
    seismic /= np.sqrt(np.mean(seismic.astype(np.float64) ** 2)) + 1e-12
    if noise > 0:
        raw = np.random.default_rng([seed, 7919]).standard_normal(shape, dtype=np.float32)
        band = convolve_traces(raw, wavelet)
        seismic += (noise / (band.std() + 1e-12)) * band
    return _assemble(seismic, labels, names, lay, seed, noise, attempt, sample_interval_ms, start_ms,
                     lines, pick_sample_step, peak_hz)


def _generate_varied(shape, seed, dt, t0, lines, pick_step) -> SynthSurvey:
    _check_options(shape, list(FACIES), 0.0, 0, dt, t0)
    try:
        seismic, labels, looks, region, lay, meta = synth_varied.draw_varied(shape, seed, dt)
    except ValueError as exc:
        raise SynthError(str(exc)) from None
    survey = _assemble(seismic, labels, synth_varied.class_names(lay.n_classes), lay, seed, meta["noise"],
                       meta["layout_attempt"], dt, t0, lines, pick_step, meta["peak_hz"], region)
    survey.meta = meta | {"pick_region": [region[0], list(region[1])]}
    survey.looks = looks
    return survey


def _picks_on_line(labels: np.ndarray, pick_sample_step: int, region=None) -> PickSet:
    il, (x0, x1) = region or pick_region(labels.shape)
    jj, kk = np.meshgrid(np.arange(x0, x1), np.arange(0, labels.shape[2], pick_sample_step), indexing="ij")
    jj, kk = jj.ravel(), kk.ravel()
    return PickSet(np.full(jj.shape, il), jj, kk, labels[il, jj, kk].astype(np.int64))


def _assemble(seismic, labels, names, lay, seed, noise, attempt, dt, t0, lines, pick_step, peak_hz,
              region=None) -> SynthSurvey:
    nil, nxl, _ = labels.shape
    inlines = lines[0] + lines[1] * np.arange(nil)
    crosslines = lines[2] + lines[3] * np.arange(nxl)
    # a rotated survey grid, 25 m bins, at plausible UTM magnitudes
    ii, jj = np.meshgrid(np.arange(nil), np.arange(nxl), indexing="ij")
    rot = np.deg2rad(32.0)
    cdp_x = np.round(604512.0 + 25.0 * (ii * np.cos(rot) - jj * np.sin(rot)), 2)
    cdp_y = np.round(6081230.0 + 25.0 * (ii * np.sin(rot) + jj * np.cos(rot)), 2)
    meta = {"layout_attempt": attempt, "peak_hz": peak_hz,
            "faults": [vars(f) | {"centre": list(f.centre)} for f in lay.faults]}
    return SynthSurvey(seismic, labels, names, inlines, crosslines, float(dt), float(t0), cdp_x, cdp_y,
                       _picks_on_line(labels, pick_step, region), lay.faults, seed, noise, meta)


# ---------------------------------------------------------------- baselines

def depth_only_baseline(labels: np.ndarray, picks: PickSet) -> float:
    """Accuracy over the cube of predicting, at each sample index, the class most often picked at that index
    (indices without picks take the nearest picked index)."""
    ns, n_cls = labels.shape[2], int(max(labels.max(), picks.class_id.max())) + 1
    counts = np.zeros((ns, n_cls), dtype=np.int64)
    np.add.at(counts, (picks.sample_index, picks.class_id), 1)
    picked = np.flatnonzero(counts.sum(axis=1))
    nearest = picked[np.abs(np.arange(ns)[:, None] - picked[None, :]).argmin(axis=1)]
    pred = counts[nearest].argmax(axis=1)
    return float(np.mean(labels == pred[None, None, :].astype(labels.dtype)))


def amplitude_only_baseline(seismic: np.ndarray, labels: np.ndarray, picks: PickSet, bins: int = 64) -> float:
    """Accuracy over the cube of a 1-D classifier on the single sample value: the most often picked class in each
    amplitude bin (bins at quantiles of the picked amplitudes)."""
    amp = seismic[picks.inline_index, picks.crossline_index, picks.sample_index]
    edges = np.unique(np.quantile(amp, np.linspace(0, 1, bins + 1)[1:-1]))
    n_cls = int(max(labels.max(), picks.class_id.max())) + 1
    counts = np.zeros((len(edges) + 1, n_cls), dtype=np.int64)
    np.add.at(counts, (np.searchsorted(edges, amp), picks.class_id), 1)
    table = counts.argmax(axis=1).astype(labels.dtype)
    hits = 0
    for i in range(labels.shape[0]):  # per inline: keeps the bin index array small
        hits += int(np.count_nonzero(table[np.searchsorted(edges, seismic[i])] == labels[i]))
    return hits / labels.size


def seen_looks(survey: SynthSurvey) -> np.ndarray | None:
    """Boolean [il, xl, sample]: the voxels whose texture look shows somewhere in the picks (varied family; None
    for the classic one). A model that learns textures from the picks has seen the others' look nowhere: only their
    place in the stack (which unit they belong to) says their class."""
    counts = look_picks(survey)
    return None if counts is None else counts > 0


def look_picks(survey: SynthSurvey) -> np.ndarray | None:
    """Int [il, xl, sample]: how many picks show each voxel's texture look (varied family; None for the classic
    one). A look on a few picks at the span's edge counts as seen but is hardly shown: this says how much."""
    if survey.looks is None:
        return None
    p = survey.picks
    shown = survey.looks[p.inline_index, p.crossline_index, p.sample_index]
    return np.bincount(shown, minlength=int(survey.looks.max()) + 1)[survey.looks]


def class_shares(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of voxels per class id."""
    return np.bincount(labels.ravel(), minlength=n_classes) / labels.size


# ---------------------------------------------------------------- figure

def write_figure(survey: SynthSurvey, path: Path) -> Path:
    """PNG of the picked inline and the middle crossline of the picks: seismic beside labels, picks outlined."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    il, (x0, x1) = survey_pick_region(survey)
    xl = (x0 + x1) // 2
    t = survey.samples_ms
    cmap = ListedColormap([colour_of(n) for n in survey.class_names])
    clip = float(np.percentile(np.abs(survey.seismic[il]), 99))
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), constrained_layout=True)
    panels = [(survey.seismic[il].T, survey.labels[il].T, survey.crosslines, f"inline {survey.inlines[il]}",
               "crossline"),
              (survey.seismic[:, xl].T, survey.labels[:, xl].T, survey.inlines, f"crossline {survey.crosslines[xl]}",
               "inline")]
    for row, (sei, lab, axis, title, xlabel) in enumerate(panels):
        extent = (axis[0], axis[-1], t[-1], t[0])
        axes[row, 0].imshow(sei, cmap="gray_r", vmin=-clip, vmax=clip, aspect="auto", extent=extent)
        axes[row, 1].imshow(lab, cmap=cmap, vmin=-0.5, vmax=len(survey.class_names) - 0.5, aspect="auto",
                            extent=extent, interpolation="nearest")
        for ax, kind in zip(axes[row], ("seismic", "labels")):
            ax.set(title=f"{title}: {kind}", xlabel=xlabel, ylabel="TWT (ms)")
        if row == 0:
            for ax in axes[0]:
                ax.add_patch(Rectangle((survey.crosslines[x0], t[-1]),
                                       survey.crosslines[x1 - 1] - survey.crosslines[x0],
                                       t[0] - t[-1], fill=False, edgecolor="cyan", lw=2))
    handles = [Patch(color=colour_of(n), label=f"{i} {n}") for i, n in enumerate(survey.class_names)]
    axes[0, 1].legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle(f"synthetic survey, seed {survey.seed}, noise {survey.noise} (cyan: picked part)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- files

def _text_header(survey: SynthSurvey, what: str) -> bytes:
    import segyio
    nil, nxl, ns = survey.labels.shape
    lines = {1: f"SEISD SYNTHETIC SURVEY (tools/synth.py v{GENERATOR_VERSION}) - {what}",
             2: f"SEED {survey.seed}  NOISE {survey.noise}  SHAPE {nil} x {nxl} x {ns}",
             3: f"INLINES {survey.inlines[0]}-{survey.inlines[-1]} AT BYTE 189, "
                f"CROSSLINES {survey.crosslines[0]}-{survey.crosslines[-1]} AT BYTE 193",
             4: "CDP X/Y AT BYTES 181/185, SCALAR -100 (CM), METRES",
             5: f"SAMPLES {ns} AT {survey.sample_interval_ms} MS FROM {survey.start_ms} MS, IEEE FLOAT",
             6: "CLASSES " + " ".join(f"{i}={n}" for i, n in enumerate(survey.class_names))}
    return segyio.tools.create_text_header(lines)


def write_segy(survey: SynthSurvey, volume: np.ndarray, path: Path, what: str) -> Path:
    """One 3-D post-stack SEG-Y (IEEE float, inline sorted) of `volume` with the survey's geometry."""
    import segyio
    nil, nxl, ns = volume.shape
    spec = segyio.spec()
    spec.iline, spec.xline, spec.format, spec.sorting = 189, 193, 5, segyio.TraceSortingFormat.INLINE_SORTING
    spec.samples, spec.ilines, spec.xlines = survey.samples_ms, survey.inlines, survey.crosslines
    dt_us = int(round(survey.sample_interval_ms * 1000))
    tf = segyio.TraceField
    with segyio.create(str(path), spec) as f:
        f.text[0] = _text_header(survey, what)
        f.bin.update(hdt=dt_us, hns=ns, format=5, tsort=2, mfeet=1)
        for i in range(nil):
            for j in range(nxl):
                n = i * nxl + j
                f.header[n] = {tf.INLINE_3D: int(survey.inlines[i]), tf.CROSSLINE_3D: int(survey.crosslines[j]),
                               tf.CDP_X: int(round(survey.cdp_x[i, j] * 100)),
                               tf.CDP_Y: int(round(survey.cdp_y[i, j] * 100)), tf.SourceGroupScalar: -100,
                               tf.CoordinateUnits: 1, tf.TRACE_SEQUENCE_LINE: n + 1, tf.TRACE_SEQUENCE_FILE: n + 1,
                               tf.CDP: n + 1, tf.TRACE_SAMPLE_COUNT: ns, tf.TRACE_SAMPLE_INTERVAL: dt_us,
                               tf.DelayRecordingTime: int(survey.start_ms)}
            f.iline[int(survey.inlines[i])] = np.ascontiguousarray(volume[i], dtype=np.float32)
    return path


def write_picks(survey: SynthSurvey, folder: Path) -> list[Path]:
    """MalenoV-style pick files: one per class, rows `inline<TAB>crossline<TAB>time_ms`, LF line ends."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cid, name in enumerate(survey.class_names):
        path = folder / f"{name}.pts"
        rows = survey.pick_table(cid)
        with open(path, "w", newline="\n") as out:
            out.writelines(f"{int(a)}\t{int(b)}\t{c:g}\n" for a, b, c in rows)
        paths.append(path)
    return paths


def classes_document(survey: SynthSurvey) -> dict:
    """The contents of classes.json: classes, where the picks are, and how the survey was made."""
    il, (x0, x1) = survey_pick_region(survey)
    counts = np.bincount(survey.picks.class_id, minlength=len(survey.class_names))
    varied = {k: survey.meta[k] for k in ("family", "phase_deg", "coverage", "looks") if k in survey.meta}
    return varied | {
        "generator": "seisd tools/synth.py", "generator_version": GENERATOR_VERSION, "seed": survey.seed,
        "noise": survey.noise, "shape": list(survey.labels.shape),
        "classes": [{"id": i, "name": n, "colour": colour_of(n), "picks": int(counts[i]),
                     "share": float(s)} for i, (n, s) in
                    enumerate(zip(survey.class_names, class_shares(survey.labels, len(survey.class_names))))],
        "picks": {"inline": int(survey.inlines[il]),
                  "crosslines": [int(survey.crosslines[x0]), int(survey.crosslines[x1 - 1])],
                  "time_ms": [float(survey.samples_ms[0]), float(survey.samples_ms[-1])],
                  "folder": "picks", "columns": ["inline", "crossline", "time_ms"]},
        "inlines": {"first": int(survey.inlines[0]), "last": int(survey.inlines[-1]),
                    "step": int(survey.inlines[1] - survey.inlines[0])},
        "crosslines": {"first": int(survey.crosslines[0]), "last": int(survey.crosslines[-1]),
                       "step": int(survey.crosslines[1] - survey.crosslines[0])},
        "sample_interval_ms": survey.sample_interval_ms, "start_ms": survey.start_ms,
        "faults": survey.meta["faults"], "peak_hz": survey.meta["peak_hz"],
    }


def write(survey: SynthSurvey, folder: Path | str, figure: bool = False) -> list[Path]:
    """Write seismic.sgy, labels.sgy, picks/<class>.pts, classes.json (and figure.png) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_segy(survey, survey.seismic, folder / "seismic.sgy", "SEISMIC AMPLITUDE"),
             write_segy(survey, survey.labels.astype(np.float32), folder / "labels.sgy", "FACIES CLASS IDS")]
    paths += write_picks(survey, folder / "picks")
    doc = folder / "classes.json"
    doc.write_text(json.dumps(classes_document(survey), indent=2) + "\n")
    paths.append(doc)
    if figure:
        paths.append(write_figure(survey, folder / "figure.png"))
    return paths


# ---------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    """CLI: generate a survey and write it into a folder."""
    ap = argparse.ArgumentParser(description="Write a synthetic facies survey (SEG-Y, labels, picks).")
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 256, 128), metavar=("IL", "XL", "NS"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", choices=FAMILIES, default="classic",
                    help="classic (default) or varied: classes, structure, noise, wavelet and pick coverage drawn "
                    "from the seed (docs/synth.md)")
    ap.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                    help=f"classic family: at least {MIN_CLASSES} of: {' '.join(FACIES)} (default all)")
    ap.add_argument("--noise", type=float, default=None, help="classic family: noise RMS / signal RMS (default 0.2)")
    ap.add_argument("--faults", type=int, default=None, help="classic family: normal faults, 0-3 (default 2)")
    ap.add_argument("--figure", action="store_true", help="also write figure.png of the picked inline")
    ap.add_argument("--quiet", action="store_true", help="print nothing")
    args = ap.parse_args(argv)
    say = (lambda *a: None) if args.quiet else print
    if args.family == "varied" and (args.classes, args.noise, args.faults) != (None, None, None):
        print("synth: --classes, --noise and --faults belong to the classic family; the varied family draws them "
              "from --seed", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        survey = generate(tuple(args.shape), args.seed, classes=args.classes or list(FACIES),
                          noise=0.2 if args.noise is None else args.noise,
                          n_faults=2 if args.faults is None else args.faults, family=args.family)
    except SynthError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    paths = write(survey, args.out, figure=args.figure)
    t2 = time.perf_counter()
    say(f"generated {survey.labels.shape} in {t1 - t0:.1f} s, wrote {len(paths)} files in {t2 - t1:.1f} s:")
    for p in paths:
        say(f"  {p}")
    say(f"depth-only baseline {depth_only_baseline(survey.labels, survey.picks):.3f}, amplitude-only baseline "
        f"{amplitude_only_baseline(survey.seismic, survey.labels, survey.picks):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
