"""The "varied" survey family of tools/synth.py: a different survey per seed, drawn from a wide space.

Per seed it draws 4 to 8 classes stacked in random order and thickness (classes repeat down the section), folding
whose amplitude grows with depth on top of a regional tilt, 0 to 4 normal faults with throw, lateral thickening
(a wedge trend) and pinch-outs, two or three texture "looks" per class that take turns laterally (no look is shared
between classes, so the classes stay separable), a noise level and a wavelet (peak frequency and phase) of its own,
and picks over 20 % to 60 % of the crosslines of the middle inline. As in the classic family, labels and impedance
are functions of the paleo depth z0 = z - fold(il, xl, z) - fault_throw(il, xl, z), so labels move with the strata.

`draw_varied(shape, seed)` returns the arrays and a description; tools/synth.py wraps them in a SynthSurvey.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth_model import BlockySeries, Fault, convolve_traces, fault_throw, reflectivity, smooth_field

CLASS_RANGE = (4, 8)          # classes per survey, both ends included
FAULT_RANGE = (0, 4)          # faults per survey, both ends included
COVERAGE_RANGE = (0.2, 0.6)   # picked share of the middle inline's crosslines
NOISE_RANGE = (0.05, 0.3)     # band-limited noise RMS / signal RMS
PEAK_HZ_RANGE = (18.0, 40.0)  # wavelet peak frequency
PHASE_RANGE = (-90.0, 90.0)   # constant phase rotation of the wavelet, degrees
LOOKS_PER_CLASS = (2, 3)
MIN_PICK_SHARE = 0.03         # every class covers at least this share of the picks
MAX_DEPTH_ONLY = 0.42         # a layout whose depth-only baseline (estimated on 8 inlines) is higher is redrawn
COLOURS = ("#1f4e9c", "#9ecae1", "#2ca02c", "#d62728", "#ff7f0e", "#ffd92f", "#7f3c8d", "#8c564b")

FAMILIES = ("parallel", "wavy", "dipping", "hummocky", "broken", "chaotic")
AMPLITUDES = {"strong": 0.16, "weak": 0.08}
BEDS = {"thin": (1.5, 3.0), "thick": (4.0, 7.0)}
_CHUNK = 16


def class_names(n: int) -> tuple[str, ...]:
    """Names of the classes of an n-class varied survey (sorted order is id order)."""
    return tuple(f"facies_{i + 1}" for i in range(n))


@dataclass(frozen=True)
class Look:
    """One texture: a family at an amplitude and bed thickness, with its own drawn parameters."""

    family: str
    amplitude: str
    bed: str
    series: BlockySeries
    params: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"{self.family}/{self.amplitude}/{self.bed}"


@dataclass
class VariedLayout:
    n_classes: int
    fold_tilt: np.ndarray            # [il, xl] samples
    fold_bumps: np.ndarray           # [il, xl] unit-std field
    fold_gain: tuple[float, float]   # bump amplitude at the top and its growth to the bottom (samples)
    faults: tuple[Fault, ...]
    boundaries: np.ndarray           # [n_units - 1, il, xl] z0 of unit tops
    unit_class: np.ndarray           # [n_units]
    base_imp: np.ndarray             # [n_units]
    unit_look: np.ndarray            # [n_units, il, xl] index into `looks`
    looks: tuple[Look, ...]
    class_looks: tuple[tuple[int, ...], ...]
    fields: dict[str, np.ndarray]    # periodic textures shared by the looks


def _draw_looks(rng: np.random.Generator, n_classes: int, lo: float, hi: float
                ) -> tuple[tuple[Look, ...], tuple[tuple[int, ...], ...]]:
    """Two or three looks per class, each of a different family, no (family, amplitude, bed) used twice."""
    pool = [(f, a, b) for f in FAMILIES for a in AMPLITUDES for b in BEDS]
    order = [pool[i] for i in rng.permutation(len(pool))]
    looks: list[Look] = []
    class_looks = []
    for _ in range(n_classes):
        want = int(rng.integers(LOOKS_PER_CLASS[0], LOOKS_PER_CLASS[1] + 1))
        mine: list[int] = []
        for combo in list(order):
            if len(mine) == want:
                break
            if combo[0] in {looks[i].family for i in mine}:
                continue
            order.remove(combo)
            fam, amp, bed = combo
            params = (float(rng.uniform(2.0, 4.0)), float(rng.uniform(8, 20)), float(rng.uniform(8, 20)),
                      *(float(v) for v in rng.uniform(0, 2 * np.pi, 2)),
                      *(float(v) for v in rng.uniform(0.4, 1.0, 2) * rng.choice([-1, 1], 2)))
            series = BlockySeries.draw(rng, lo, hi, BEDS[bed], alternate=fam in ("parallel", "broken"))
            looks.append(Look(fam, amp, bed, series, params))
            mine.append(len(looks) - 1)
        class_looks.append(tuple(mine))
    return tuple(looks), tuple(class_looks)


def _stack(rng: np.random.Generator, n_classes: int) -> list[int]:
    """Classes of the units seen at the reference trace: every class once in random order, plus one or two
    repeats, never the same class twice in a row."""
    seq = [int(c) for c in rng.permutation(n_classes)]
    for _ in range(int(rng.integers(1, 3))):
        c = int(rng.integers(n_classes))
        spots = [k for k in range(len(seq) + 1)
                 if (k == 0 or seq[k - 1] != c) and (k == len(seq) or seq[k] != c)]
        seq.insert(int(rng.choice(spots)), c)
    return seq


def draw_layout(rng: np.random.Generator, shape: tuple[int, int, int], ref: tuple[int, int]) -> VariedLayout:
    """Draw one model; `ref` is the reference trace (il, xl) at the centre of the picks."""
    nil, nxl, ns = shape
    n_classes = int(rng.integers(CLASS_RANGE[0], CLASS_RANGE[1] + 1))
    ii, jj = np.meshgrid(np.linspace(-0.5, 0.5, nil), np.linspace(-0.5, 0.5, nxl), indexing="ij")
    tilt = rng.uniform(0.15, 0.3) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    fold_tilt = (ns * (tilt[0] * ii + tilt[1] * jj)).astype(np.float32)
    fold_bumps = smooth_field(rng, (nil, nxl), (0.15 * nil, 0.15 * nxl))
    fold_gain = (float(rng.uniform(0.02, 0.05) * ns), float(rng.uniform(0.06, 0.14) * ns))
    faults = tuple(Fault(centre=(float(rng.uniform(0.2, 0.8) * nil), float(rng.uniform(0.2, 0.8) * nxl)),
                         strike_deg=float(rng.uniform(0, 180)),
                         slope=float(rng.uniform(0.25, 0.6) * rng.choice([-1, 1])),
                         throw=int(max(2, round(rng.uniform(0.04, 0.12) * ns))))
                   for _ in range(int(rng.integers(FAULT_RANGE[0], FAULT_RANGE[1] + 1))))
    # the units seen at the reference trace fill the section there; more above and below for the structure
    window = _stack(rng, n_classes)
    fold_ref = float(fold_tilt[ref] + fold_gain[0] * fold_bumps[ref])
    top0, bot0 = -fold_ref - 0.05 * ns, 1.05 * ns - fold_ref
    shares = rng.uniform(0.6, 1.4, len(window))
    thick = list(shares / shares.sum() * (bot0 - top0))
    mean_t = (bot0 - top0) / len(window)
    reach = 0.6 * ns + float(np.abs(fold_tilt).max()) + 4 * sum(fold_gain)
    above: list[int] = []
    below: list[int] = []
    while len(above) * mean_t < reach:
        above.insert(0, int(rng.choice([c for c in range(n_classes) if c != (above[0] if above else window[0])])))
    while len(below) * mean_t < reach:
        below.append(int(rng.choice([c for c in range(n_classes) if c != (below[-1] if below else window[-1])])))
    unit_class = np.array(above + window + below)
    t_all = np.array([mean_t] * len(above) + thick + [mean_t] * len(below))
    # thickness: 1 at the reference trace, a smooth variation plus a wedge trend; clipped at 0 (pinch-outs)
    n_units = len(unit_class)
    var = np.stack([smooth_field(rng, (nil, nxl), (0.2 * nil, 0.2 * nxl)) for _ in range(n_units)])
    wedge = rng.uniform(-0.8, 0.8, (n_units, 2))
    trend = wedge[:, 0, None, None] * ii[None] + wedge[:, 1, None, None] * jj[None]
    mult = 1 + rng.uniform(0.3, 0.6) * (var - var[:, ref[0], ref[1]][:, None, None])
    mult = np.clip(mult + trend - trend[:, ref[0], ref[1]][:, None, None], 0.0, None)
    tops = np.cumsum(t_all[:, None, None] * mult, axis=0)
    tops = tops - tops[len(above) - 1] + top0
    lo, hi = -3.0 * ns - 2 * (nil + nxl), 4.0 * ns + 2 * (nil + nxl)
    looks, class_looks = _draw_looks(rng, n_classes, lo, hi)
    # which of its class's looks a unit shows where: the largest of a few smooth fields (the first favoured)
    unit_look = np.empty((n_units, nil, nxl), dtype=np.int16)
    for k, c in enumerate(unit_class):
        mine = class_looks[c]
        f = np.stack([smooth_field(rng, (nil, nxl), (0.25 * nil, 0.25 * nxl)) + (0.4 if m == 0 else 0.0)
                      for m in range(len(mine))])
        unit_look[k] = np.asarray(mine, dtype=np.int16)[f.argmax(axis=0)]
    fields = {"mounds": smooth_field(rng, (64, 64), (3.0, 3.0)),
              "segments": smooth_field(rng, (64, 64, 64), (2.5, 2.5, 0.7)),
              "chaos_thin": smooth_field(rng, (64, 64, 64), (1.2, 1.2, 0.8)),
              "chaos_thick": smooth_field(rng, (64, 64, 64), (2.0, 2.0, 1.6))}
    return VariedLayout(n_classes, fold_tilt, fold_bumps, fold_gain, faults, tops[:-1].astype(np.float32),
                        unit_class, rng.uniform(0.96, 1.04, n_units).astype(np.float32), unit_look, looks,
                        class_looks, fields)


def _texture(lay: VariedLayout, look: Look, ii: np.ndarray, jj: np.ndarray, z0: np.ndarray) -> np.ndarray:
    """Impedance perturbation of one look at paleo positions (flat arrays)."""
    a, li, lj, p1, p2, di, dj = look.params
    f = look.family
    if f == "parallel":
        out = look.series(z0)
    elif f == "wavy":
        out = look.series(z0 + a * (np.sin(2 * np.pi * ii / li + p1) + np.sin(2 * np.pi * jj / lj + p2)))
    elif f == "dipping":
        out = look.series(z0 - di * ii - dj * jj)
    elif f == "hummocky":
        out = look.series(z0 + 1.5 * a * lay.fields["mounds"][ii.astype(np.int64) % 64, jj.astype(np.int64) % 64])
    elif f == "broken":
        seg = lay.fields["segments"][ii.astype(np.int64) % 64, jj.astype(np.int64) % 64,
                                     np.floor(z0 / 4).astype(np.int64) % 64]
        out = look.series(z0) * np.where(seg > 0, 1.0, 0.15)
    else:  # chaotic
        tile = lay.fields["chaos_thin" if look.bed == "thin" else "chaos_thick"]
        out = tile[ii.astype(np.int64) % 64, jj.astype(np.int64) % 64, np.floor(z0).astype(np.int64) % 64]
    return AMPLITUDES[look.amplitude] * out


def evaluate(lay: VariedLayout, i_idx: np.ndarray, nxl: int, ns: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (uint8), impedance (float32) and look (int16, an index into `lay.looks`) of the inlines `i_idx`,
    shape [len(i_idx), nxl, ns]."""
    ii = i_idx[:, None, None].astype(np.float32)
    jj = np.arange(nxl, dtype=np.float32)[None, :, None]
    zz = np.arange(ns, dtype=np.float32)[None, None, :]
    fold = lay.fold_tilt[i_idx][..., None] + (lay.fold_gain[0] + lay.fold_gain[1] * zz / ns) * \
        lay.fold_bumps[i_idx][..., None]
    z0 = zz - fold
    if lay.faults:
        z0 = z0 - fault_throw(lay.faults, ii, jj, zz, ns)
    tops = lay.boundaries[:, i_idx]
    unit = np.zeros(z0.shape, dtype=np.int64)
    for k in range(tops.shape[0]):
        unit += z0 >= tops[k][..., None]
    labels = lay.unit_class[unit].astype(np.uint8)
    ia, ja = np.ix_(np.arange(len(i_idx)), np.arange(nxl))
    look_of = lay.unit_look[:, i_idx][unit, ia[..., None], ja[..., None]]
    imp = lay.base_imp[unit].astype(np.float32)
    full = np.broadcast_to
    iif, jjf = full(ii, z0.shape), full(jj, z0.shape)
    for g in np.unique(look_of):
        sel = look_of == g
        imp[sel] += _texture(lay, lay.looks[g], iif[sel], jjf[sel], z0[sel])
    return labels, imp, look_of.astype(np.int16, copy=False)


def wavelet(peak_hz: float, phase_deg: float, dt_ms: float) -> np.ndarray:
    """Ricker wavelet (+-2.5 periods) rotated by a constant phase, peak absolute value 1."""
    half = int(np.ceil(2.5 / peak_hz / (dt_ms / 1000.0)))
    t = np.arange(-half, half + 1) * dt_ms / 1000.0
    a = (np.pi * peak_hz * t) ** 2
    w = (1 - 2 * a) * np.exp(-a)
    spec = np.fft.fft(w) * np.exp(-1j * np.deg2rad(phase_deg) * np.sign(np.fft.fftfreq(len(w))))
    w = np.fft.ifft(spec).real
    return (w / np.abs(w).max()).astype(np.float32)


def _pick_span(rng: np.random.Generator, nxl: int) -> tuple[float, tuple[int, int]]:
    coverage = float(rng.uniform(*COVERAGE_RANGE))
    n = max(2, int(round(coverage * nxl)))
    x0 = int(rng.integers(0, nxl - n + 1))
    return coverage, (x0, x0 + n)


def _covers_all(line: np.ndarray, span: tuple[int, int], n_classes: int) -> bool:
    counts = np.bincount(line[span[0]:span[1]].ravel(), minlength=n_classes)
    return bool(np.all(counts >= max(5, MIN_PICK_SHARE * counts.sum())))


def _depth_says_little(lay: VariedLayout, line: np.ndarray, span: tuple[int, int],
                       shape: tuple[int, int, int]) -> bool:
    """The depth-only classifier (each sample index -> its most picked class) scores at most MAX_DEPTH_ONLY on
    8 inlines spread over the survey: depth alone must not name the class."""
    by_depth = np.array([np.bincount(line[span[0]:span[1], k], minlength=lay.n_classes).argmax()
                         for k in range(shape[2])], dtype=np.uint8)
    rows = np.linspace(0, shape[0] - 1, 8).round().astype(int)
    return float(np.mean(evaluate(lay, rows, shape[1], shape[2])[0] == by_depth)) <= MAX_DEPTH_ONLY


def draw_varied(shape: tuple[int, int, int], seed: int, sample_interval_ms: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, tuple[int, int]], VariedLayout, dict]:
    """Seismic, labels, looks (per voxel the index of its look in `layout.looks`), the picked region (inline
    index, crossline index range) and the layout and description.

    The layout is redrawn (deterministically) until every class covers MIN_PICK_SHARE of the picked part and
    the depth-only baseline, estimated on 8 inlines, is at most MAX_DEPTH_ONLY."""
    nil, nxl, ns = shape
    survey_rng = np.random.default_rng([seed, 1, 0])
    coverage, span = _pick_span(survey_rng, nxl)
    noise = float(survey_rng.uniform(*NOISE_RANGE))
    peak_hz = float(survey_rng.uniform(*PEAK_HZ_RANGE))
    phase = float(survey_rng.uniform(*PHASE_RANGE))
    ref = (nil // 2, (span[0] + span[1]) // 2)
    for attempt in range(100):
        lay = draw_layout(np.random.default_rng([seed, 1, 1 + attempt]), shape, ref)
        line = evaluate(lay, np.array([ref[0]]), nxl, ns)[0][0]
        if _covers_all(line, span, lay.n_classes) and _depth_says_little(lay, line, span, shape):
            break
    else:
        raise ValueError(f"seed {seed}: no varied layout shows every class on the picked part; try another seed "
                         "or a larger shape")
    labels = np.empty(shape, dtype=np.uint8)
    looks = np.empty(shape, dtype=np.int16)
    seismic = np.empty(shape, dtype=np.float32)
    w = wavelet(peak_hz, phase, sample_interval_ms)
    for i0 in range(0, nil, _CHUNK):
        idx = np.arange(i0, min(nil, i0 + _CHUNK))
        labels[idx], imp, looks[idx] = evaluate(lay, idx, nxl, ns)
        seismic[idx] = convolve_traces(reflectivity(imp), w)
    seismic /= np.sqrt(np.mean(seismic.astype(np.float64) ** 2)) + 1e-12
    raw = np.random.default_rng([seed, 1, 7919]).standard_normal(shape, dtype=np.float32)
    band = convolve_traces(raw, w)
    seismic += (noise / (band.std() + 1e-12)) * band
    meta = {"family": "varied", "layout_attempt": attempt, "peak_hz": round(peak_hz, 2),
            "phase_deg": round(phase, 1), "noise": round(noise, 3), "coverage": round(coverage, 3),
            "classes": lay.n_classes, "units": int(len(lay.unit_class)),
            "looks": {name: [lay.looks[g].name for g in lay.class_looks[c]]
                      for c, name in enumerate(class_names(lay.n_classes))},
            "faults": [vars(f) | {"centre": list(f.centre)} for f in lay.faults]}
    return seismic, labels, looks, (ref[0], span), lay, meta
