"""The stratigraphic model behind tools/synth.py: folds, faults, facies units, channels, a salt body, and
the impedance -> seismic step.

Everything is evaluated at present-day positions (il, xl, z): z0 = z - fold(il, xl) - fault_throw(il, xl, z) is
the paleo (stratigraphic) depth, and labels and impedance are functions of (il, xl, z0) only, so labels move with
the strata through folds and faults by construction. `evaluate` works on any set of inlines, which lets the
generator check a layout on the picked inline before building the whole cube.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

LAYERED = ("parallel_high", "parallel_low", "wavy", "chaotic", "clinoforms")


@dataclass(frozen=True)
class Fault:
    """A planar normal fault: hanging wall where d > slope * (z - ns/2), d the distance from the centre along strike
    normal (in traces); the hanging wall is shifted down by `throw` samples."""

    centre: tuple[float, float]
    strike_deg: float
    slope: float
    throw: int


# ---------------------------------------------------------------- random building blocks

def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], corr: Sequence[float]) -> np.ndarray:
    """Gaussian random field (periodic, zero mean, unit std) with correlation lengths `corr` per axis, via FFT."""
    white = rng.standard_normal(shape)
    spec = np.fft.fftn(white)
    for axis, (n, c) in enumerate(zip(shape, corr)):
        k = np.fft.fftfreq(n)
        gain = np.exp(-2.0 * (np.pi * k * c) ** 2)
        spec *= gain.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    out = np.fft.ifftn(spec).real
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class BlockySeries:
    """A 1-D layered impedance log: constant values over layers of random thickness, looked up by depth."""

    values: np.ndarray
    origin: float
    step: float = 0.25

    @classmethod
    def draw(cls, rng: np.random.Generator, lo: float, hi: float, thick: tuple[float, float],
             alternate: bool = False) -> "BlockySeries":
        """Layers of thickness uniform in `thick` samples covering depths [lo, hi); `alternate`: layer values
        alternate in sign with magnitudes 0.8-1.2, so every interface is a strong reflector (parallel facies)."""
        n_fine = int((hi - lo) / 0.25) + 1
        edges = np.cumsum(rng.uniform(*thick, size=int((hi - lo) / thick[0]) + 2) / 0.25).astype(int)
        layer_of = np.searchsorted(edges, np.arange(n_fine), side="right")
        amp = rng.standard_normal(len(edges) + 1)
        amp = np.sign(amp) * (0.5 + 0.5 * np.abs(amp))  # avoid near-zero contrasts
        if alternate:
            amp = np.where(np.arange(len(amp)) % 2 == 0, 1.0, -1.0) * rng.uniform(0.8, 1.2, len(amp))
        return cls(values=amp[layer_of].astype(np.float32), origin=lo)

    def __call__(self, depth: np.ndarray) -> np.ndarray:
        idx = ((depth - self.origin) / self.step).astype(np.int64)
        return self.values[np.clip(idx, 0, len(self.values) - 1)]


# ---------------------------------------------------------------- the model

@dataclass
class Layout:
    """Everything drawn for one model; evaluated chunk by chunk by `evaluate`."""

    ids: dict[str, int]
    fold: np.ndarray                 # [il, xl] vertical shift in samples
    faults: tuple[Fault, ...]        # the applied ones
    candidates: tuple[Fault, ...]    # all drawn (the first n are applied)
    boundaries: np.ndarray           # [n_units - 1, il, xl] z0 of unit tops, increasing with the index
    primary: np.ndarray              # [n_units] class id
    secondary: np.ndarray            # [n_units] class id where the lateral change field is set
    change: np.ndarray               # [n_units, il, xl] bool
    base_imp: np.ndarray             # [n_units]
    series: dict[str, BlockySeries]
    tile: np.ndarray                 # periodic 3-D random texture for chaotic and salt interiors
    warp: np.ndarray                 # periodic 3-D smooth field that contorts the chaotic reflectors
    channels: list[dict]
    salt: dict | None
    wavy: tuple[float, ...]          # amplitude (samples), wavelengths along il and xl (traces), phases
    clino: tuple[float, float]       # dip along il and along xl (samples per trace), both strong


def _fold_field(rng: np.random.Generator, nil: int, nxl: int, ns: int) -> np.ndarray:
    """Folds: a regional tilt plus smooth domes and troughs, about +-0.2 ns overall."""
    ii, jj = np.meshgrid(np.linspace(-0.5, 0.5, nil), np.linspace(-0.5, 0.5, nxl), indexing="ij")
    tilt = rng.uniform(-0.15, 0.15, 2)
    bumps = smooth_field(rng, (nil, nxl), (0.22 * nil, 0.22 * nxl))
    return (ns * (tilt[0] * ii + tilt[1] * jj + 0.09 * bumps)).astype(np.float32)


def _draw_faults(rng: np.random.Generator, nil: int, nxl: int, ns: int) -> tuple[Fault, ...]:
    """Always draw three faults so the rest of the model does not depend on how many are applied."""
    drawn = []
    for _ in range(3):
        drawn.append(Fault(centre=(rng.uniform(0.25, 0.75) * nil, rng.uniform(0.25, 0.75) * nxl),
                           strike_deg=rng.uniform(0, 180), slope=rng.uniform(0.25, 0.5) * rng.choice([-1, 1]),
                           throw=int(max(2, round(rng.uniform(0.06, 0.11) * ns)))))
    return tuple(drawn)


def fault_throw(faults: Sequence[Fault], ii: np.ndarray, jj: np.ndarray, zz: np.ndarray, ns: int) -> np.ndarray:
    """Total downward shift (samples, int) from all faults at present-day positions (broadcast index arrays)."""
    total = np.zeros(np.broadcast_shapes(ii.shape, jj.shape, zz.shape), dtype=np.int32)
    for f in faults:
        a = np.deg2rad(f.strike_deg)
        d = (ii - f.centre[0]) * np.cos(a) + (jj - f.centre[1]) * np.sin(a)
        total += np.where(d > f.slope * (zz - ns / 2), f.throw, 0).astype(np.int32)
    return total


def _units(rng: np.random.Generator, ids: dict[str, int], nil: int, nxl: int, ns: int, fold: np.ndarray,
           ref: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit boundaries and facies: every layered class inside the window seen at the reference trace, random
    units above and below, laterally varying thickness (pinch-outs) and lateral facies changes."""
    layered = [ids[n] for n in LAYERED if n in ids]
    # the window's first and last units are cut by the trace ends, so the five units are about ns / 4.2 thick
    top0, bot0 = -float(fold[ref]) - 0.1 * ns, 1.1 * ns - float(fold[ref])
    shares = rng.uniform(0.7, 1.3, len(layered))
    window = list(rng.permutation(layered))
    thick = list(shares / shares.sum() * (bot0 - top0))
    lo, hi = top0 - ns * 0.6 - np.abs(fold).max(), bot0 + ns * 0.6 + np.abs(fold).max()
    mean_t = (bot0 - top0) / len(layered)
    above, below = [], []
    covered_top, covered_bot = top0, bot0
    while covered_top > lo:
        above.insert(0, int(rng.choice([c for c in layered if c != (above[0] if above else window[0])])))
        covered_top -= mean_t
    while covered_bot < hi:
        below.append(int(rng.choice([c for c in layered if c != (below[-1] if below else window[-1])])))
        covered_bot += mean_t
    primary = np.array(above + window + below)
    t_all = np.array([mean_t] * len(above) + thick + [mean_t] * len(below))
    # thickness multipliers equal 1 at the reference trace and vary laterally (clipped at 0: pinch-outs)
    var = np.stack([smooth_field(rng, (nil, nxl), (0.25 * nil, 0.25 * nxl)) for _ in t_all])
    mult = np.clip(1 + 0.45 * (var - var[:, ref[0], ref[1]][:, None, None]), 0.0, None)
    tops = np.cumsum(t_all[:, None, None] * mult, axis=0)
    k_top = len(above)
    tops = tops - tops[k_top - 1] + top0 if k_top else tops - t_all[0] * mult[0] + top0
    boundaries = tops[:-1]  # boundary k is the top of unit k+1
    secondary = np.array([rng.choice([c for c in layered if c != p]) for p in primary])
    # rare lateral facies changes (about 7 % of a unit's area): lateral variety comes mostly from the structure
    change = np.stack([smooth_field(rng, (nil, nxl), (0.2 * nil, 0.2 * nxl)) > 1.5 for _ in primary])
    return boundaries.astype(np.float32), primary, secondary, change


def _draw_channels(rng: np.random.Generator, layout_units: np.ndarray, nil: int, nxl: int, ns: int,
                   ref: tuple[int, int], pick_xl: tuple[int, int], n_channels: int) -> list[dict]:
    """Sinuous channels cut into unit tops; the first crosses the picked part of the reference inline."""
    channels = []
    inner = [k for k in range(layout_units.shape[0])
             if 0.15 * ns - 5 < layout_units[k][ref] < 0.85 * ns + 5]
    for c in range(n_channels):
        a = np.deg2rad(rng.uniform(25, 65) * rng.choice([-1, 1]))
        wl, amp, ph = rng.uniform(90, 160), rng.uniform(8, 20), rng.uniform(0, 2 * np.pi)
        if c == 0:
            margin = min(12.0, (pick_xl[1] - pick_xl[0]) / 4)  # keep the channel inside the picks
            i0, j0 = ref[0], rng.uniform(pick_xl[0] + margin, pick_xl[1] - margin)
        else:
            i0, j0 = rng.uniform(0, nil), rng.uniform(0, nxl)
        p0 = i0 * np.cos(a) + j0 * np.sin(a)
        q0 = -i0 * np.sin(a) + j0 * np.cos(a) - amp * np.sin(2 * np.pi * p0 / wl + ph)
        k = int(rng.choice(inner)) if inner else 0
        channels.append(dict(angle=a, wavelength=wl, amplitude=amp, phase=ph, q0=q0, boundary=k,
                             half_width=rng.uniform(18, 26), depth=max(8.0, rng.uniform(0.17, 0.21) * ns)))
    return channels


def _draw_salt(rng: np.random.Generator, nil: int, nxl: int, ns: int, fold: np.ndarray, ref: tuple[int, int],
               pick_xl: tuple[int, int]) -> dict:
    """A salt-like blob centred on the reference inline under the picked crosslines."""
    j = rng.uniform(pick_xl[0] + 0.1 * (pick_xl[1] - pick_xl[0]), pick_xl[1] - 0.1 * (pick_xl[1] - pick_xl[0]))
    z = rng.uniform(0.6, 0.75) * ns - float(fold[ref[0], int(j)])
    return dict(centre=(float(ref[0]), j, z), radii=(max(8.0, 0.22 * nil), max(8.0, 0.13 * nxl), 0.25 * ns),
                lobes=rng.uniform(0, 2 * np.pi, 2))


def draw_layout(rng: np.random.Generator, ids: dict[str, int], shape: tuple[int, int, int], n_faults: int,
                 ref: tuple[int, int], pick_xl: tuple[int, int], structure: bool = True) -> Layout:
    """Draw a whole model from `rng`; `ref` is the reference trace (il, xl) and `pick_xl` the picked crosslines,
    which the window of layered units, the first channel and the salt body are placed to show on."""
    nil, nxl, ns = shape
    fold = _fold_field(rng, nil, nxl, ns)
    candidates = _draw_faults(rng, nil, nxl, ns)
    boundaries, primary, secondary, change = _units(rng, ids, nil, nxl, ns, fold, ref)
    lo, hi = -3.0 * ns, 4.0 * ns
    series = {"parallel_high": BlockySeries.draw(rng, lo, hi, (2.5, 6.0), alternate=True),
              "parallel_low": BlockySeries.draw(rng, lo, hi, (2.5, 6.0), alternate=True),
              "wavy": BlockySeries.draw(rng, lo, hi, (3.0, 5.0)),
              "clinoforms": BlockySeries.draw(rng, lo - 3 * nil - 3 * nxl, hi + 3 * nil + 3 * nxl, (3.0, 5.0)),
              "channel_fill": BlockySeries.draw(rng, -2.0 * ns, 2.0 * ns, (3.0, 5.0)),
              "chaotic": BlockySeries.draw(rng, lo - 40, hi + 40, (2.0, 4.0))}
    tile = smooth_field(rng, (64, 64, 64), (1.2, 1.2, 1.0))
    warp = smooth_field(rng, (64, 64, 64), (2.0, 2.0, 2.5))
    channels = []
    if "channel_fill" in ids:
        unit_tops = boundaries + fold[None]  # present-day depth of each boundary without faults
        channels = _draw_channels(rng, unit_tops, nil, nxl, ns, ref, pick_xl, max(2, (nil * nxl) // 20000))
    salt = _draw_salt(rng, nil, nxl, ns, fold, ref, pick_xl) if "salt" in ids else None
    # undulation as a sum of one wave per axis: every inline and every crossline shows its full amplitude
    wavy = (rng.uniform(3.5, 4.2), rng.uniform(10, 13), rng.uniform(10, 13), *rng.uniform(0, 2 * np.pi, 2))
    # dip components along both axes, so the clinoforms dip clearly on inline and crossline sections alike
    clino = tuple(float(v) for v in rng.uniform(0.8, 1.1, 2) * rng.choice([-1, 1], 2))
    if not structure:  # the sanity case: a flat layer cake, same textures, no lateral change
        fold, candidates = np.zeros_like(fold), ()
        boundaries = np.broadcast_to(boundaries[:, ref[0], ref[1]][:, None, None], boundaries.shape).copy()
        change = np.zeros_like(change)
    return Layout(ids, fold, candidates[:n_faults], candidates, boundaries, primary, secondary, change,
                   rng.uniform(0.92, 1.08, len(primary)).astype(np.float32), series, tile, warp, channels,
                   salt, wavy, clino)


def _layered_impedance(lay: Layout, name: str, ii: np.ndarray, jj: np.ndarray, z0: np.ndarray) -> np.ndarray:
    """Texture of one layered facies (impedance perturbation) at paleo positions."""
    if name == "parallel_high":
        return 0.16 * lay.series[name](z0)
    if name == "parallel_low":
        return 0.05 * lay.series[name](z0)
    if name == "wavy":
        a, li, lj, p1, p2 = lay.wavy
        w = z0 + a * (np.sin(2 * np.pi * ii / li + p1) + np.sin(2 * np.pi * jj / lj + p2))
        return 0.15 * lay.series[name](w)
    if name == "clinoforms":
        di, dj = lay.clino
        return 0.15 * lay.series[name](z0 - di * ii - dj * jj)
    # chaotic: reflector segments contorted by a short-wavelength warp, broken up by random texture
    at = (ii.astype(np.int64) % 64, jj.astype(np.int64) % 64, np.floor(z0).astype(np.int64) % 64)
    return 0.13 * lay.tile[at]


def _channel_bodies(lay: Layout, unit_tops: np.ndarray, ii, jj, z0) -> tuple[np.ndarray, np.ndarray]:
    """Mask of channel fill and its impedance (concave-up fill layers, lower than the host: strong base)."""
    mask = np.zeros(z0.shape, dtype=bool)
    imp = np.zeros(z0.shape, dtype=np.float32)
    for ch in lay.channels:
        p = ii * np.cos(ch["angle"]) + jj * np.sin(ch["angle"])
        q = -ii * np.sin(ch["angle"]) + jj * np.cos(ch["angle"])
        r = (q - ch["q0"] - ch["amplitude"] * np.sin(2 * np.pi * p / ch["wavelength"] + ch["phase"]))
        r = r / ch["half_width"]
        depth_below = z0 - unit_tops[ch["boundary"]][..., None]
        profile = ch["depth"] * np.clip(1 - r ** 2, 0, None)
        inside = (depth_below >= 0) & (depth_below < profile)
        fill = -0.12 + 0.14 * lay.series["channel_fill"](depth_below - 0.7 * profile)
        imp = np.where(inside, fill, imp)
        mask |= inside
    return mask, imp


def _salt_body(lay: Layout, ii, jj, z0) -> np.ndarray:
    """Mask of a lobed, dome-shaped blob."""
    (ci, cj, cz), (ri, rj, rz), (l1, l2) = lay.salt["centre"], lay.salt["radii"], lay.salt["lobes"]
    di, dj, dz = (ii - ci) / ri, (jj - cj) / rj, (z0 - cz) / rz
    theta = np.arctan2(dj, di)
    radius = 1 + 0.15 * np.sin(3 * theta + l1) + 0.1 * np.sin(5 * theta + l2)
    widen = 0.8 + 0.25 * np.clip(dz, -1, 1)  # wider at depth: a pillow rising into the section
    return (di ** 2 + dj ** 2) / (radius * widen) ** 2 + dz ** 2 < 1


def evaluate(lay: Layout, i_idx: np.ndarray, nxl: int, ns: int, faults: Sequence[Fault] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint8) and impedance (float32) for the inlines `i_idx`, shape [len(i_idx), nxl, ns];
    `faults` defaults to the layout's applied faults."""
    ii = i_idx[:, None, None].astype(np.float32)
    jj = np.arange(nxl, dtype=np.float32)[None, :, None]
    zz = np.arange(ns, dtype=np.float32)[None, None, :]
    z0 = zz - lay.fold[i_idx][..., None]
    faults = lay.faults if faults is None else faults
    if faults:
        z0 = z0 - fault_throw(faults, ii, jj, zz, ns)
    tops = lay.boundaries[:, i_idx]
    unit = np.zeros(z0.shape, dtype=np.int64)
    for k in range(tops.shape[0]):
        unit += z0 >= tops[k][..., None]
    ia, ja = np.ix_(np.arange(len(i_idx)), np.arange(nxl))
    changed = lay.change[:, i_idx][unit, ia[..., None], ja[..., None]]
    labels = np.where(changed, lay.secondary[unit], lay.primary[unit]).astype(np.uint8)
    imp = lay.base_imp[unit]
    for name in LAYERED:
        if name in lay.ids:
            sel = labels == lay.ids[name]
            imp = np.where(sel, imp + _layered_impedance(lay, name, ii, jj, z0), imp)
    if lay.channels:
        mask, fill = _channel_bodies(lay, tops, ii, jj, z0)
        labels[mask] = lay.ids["channel_fill"]
        imp = np.where(mask, imp + fill, imp)
    if lay.salt is not None:
        mask = _salt_body(lay, ii, jj, z0)
        labels[mask] = lay.ids["salt"]
        interior = 0.015 * lay.tile[(ii.astype(np.int64) + 17) % 64, (jj.astype(np.int64) + 29) % 64,
                                    np.floor(z0).astype(np.int64) % 64]
        imp = np.where(mask, 1.4 + interior, imp)
    return labels, imp.astype(np.float32)


# ---------------------------------------------------------------- seismic from impedance

def ricker(peak_hz: float, dt_ms: float) -> np.ndarray:
    """Zero-phase Ricker wavelet sampled at dt_ms, +-1.5 periods long, peak 1."""
    half = int(np.ceil(1.5 / peak_hz / (dt_ms / 1000.0)))
    t = np.arange(-half, half + 1) * dt_ms / 1000.0
    a = (np.pi * peak_hz * t) ** 2
    return ((1 - 2 * a) * np.exp(-a)).astype(np.float32)


def convolve_traces(data: np.ndarray, wavelet: np.ndarray) -> np.ndarray:
    """Convolve every trace (last axis) with a centred wavelet, via FFT, same length out."""
    ns, nw = data.shape[-1], len(wavelet)
    n = ns + nw - 1
    spec = np.fft.rfft(data, n=n, axis=-1) * np.fft.rfft(wavelet, n=n)
    return np.fft.irfft(spec, n=n, axis=-1)[..., nw // 2: nw // 2 + ns].astype(np.float32)


def reflectivity(imp: np.ndarray) -> np.ndarray:
    """Normal-incidence reflection coefficients along the sample axis (last sample 0)."""
    r = np.zeros_like(imp)
    r[..., :-1] = (imp[..., 1:] - imp[..., :-1]) / (imp[..., 1:] + imp[..., :-1])
    return r
