"""Augmentation with a probability per operation, drawn as a plan from a generator seeded by (seed, epoch, k).

An ``AugmentPlan`` is drawn for each crop before it is cut, because two operations change where the crop
is cut: a small vertical shift moves the centre along the sample axis, and the inline/crossline swap of a
vertical 2D crop cuts the other vertical section. The rest (flips, transpose, vertical stretch, scaling,
polarity, noise, vertical warp) are applied to the cut crop. Every plan consumes the same number of draws
whatever the probabilities turn out, so one crop's luck never shifts the next crop's randomness; the stretch's
two draws are taken only when ``p_stretch`` > 0, the warp's two only when ``p_warp`` > 0 and the roll's two only
when ``p_roll`` > 0, so settings without them make the same batches as before they existed.

The stretch, the warp and the roll move samples along the sample axis only, inputs and labels alike, and are
applied in one resampling (``sample_positions``): where each output sample reads the cut crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workers.crops import CropSpec

_SWAPPED = {"inline": "crossline", "crossline": "inline"}
MAX_WARP = 32.0                    # samples; a single mirror at the crop's ends covers crops of 2 x this or more
WARP_WAVELENGTHS = (24.0, 96.0)    # traces: the lateral wavelengths of a warp's folds


class AugmentError(ValueError):
    """An augmentation setting out of range."""


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges. All default to off (p = 0)."""

    p_flip: float = 0.0            # each lateral axis flipped with this probability
    p_swap: float = 0.0            # inline <-> crossline
    p_scale: float = 0.0
    scale_range: tuple[float, float] = (0.8, 1.25)
    p_polarity: float = 0.0
    p_noise: float = 0.0
    noise_std: float = 0.1         # in units of the normalised amplitude
    p_shift: float = 0.0
    max_shift: int = 2             # samples
    p_stretch: float = 0.0         # vertical stretch or squeeze of the crop about its centre
    stretch_range: tuple[float, float] = (0.7, 1.4)   # layers look this many times thicker (log-uniform)
    p_warp: float = 0.0            # vertical displacement varying along the section: folds and a fault's throw
    warp_max: float = 6.0          # the folds' largest displacement from the centre sample (a fault adds as much)
    p_roll: float = 0.0            # the crop's samples rotated along the sample axis (per-voxel labels only)

    PROBABILITIES = ("p_flip", "p_swap", "p_scale", "p_polarity", "p_noise", "p_shift", "p_stretch", "p_warp",
                     "p_roll")

    @property
    def enabled(self) -> bool:
        """Whether any operation can happen (else every plan is the identity)."""
        return any(getattr(self, name) > 0 for name in self.PROBABILITIES)

    def __post_init__(self) -> None:
        for name in self.PROBABILITIES:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise AugmentError(f"{name} must be a probability in [0, 1], got {p}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise AugmentError(f"scale_range must be 0 < low <= high, got {self.scale_range}")
        lo, hi = self.stretch_range
        if not 0 < lo <= hi:
            raise AugmentError(f"stretch_range must be 0 < low <= high, got {self.stretch_range}")
        if lo < 0.5 or hi > 2.0:
            # beyond these a single mirror at the crop's ends no longer covers the squeezed crop
            raise AugmentError(f"stretch_range must lie within [0.5, 2.0], got {self.stretch_range}")
        if self.max_shift < 0 or self.noise_std < 0:
            raise AugmentError("max_shift and noise_std must be >= 0")
        if not 0 <= self.warp_max <= MAX_WARP:
            raise AugmentError(f"warp_max must lie within [0, {MAX_WARP}] samples, got {self.warp_max}")


@dataclass
class AugmentPlan:
    """What happens to one crop."""

    flips: tuple[bool, ...] = ()   # one per crop axis (the sample axis never flips: time has a direction)
    swap: bool = False
    scale: float = 1.0
    polarity: float = 1.0
    noise: bool = False
    shift: int = 0
    noise_seed: int = 0
    stretch: float = 1.0           # > 1: layers thicker (zoom in along the sample axis); < 1: thinner
    warp: int | None = None        # the seed of this crop's warp field (``warp_shifts``); None: no warp
    warp_max: float = 0.0          # its folds' largest displacement (samples)
    roll: float = 0.0              # share of the crop's samples rotated from its bottom to its top (0: none)
    _positions: np.ndarray | None = field(default=None, repr=False, compare=False)  # sample_positions, made once

    @property
    def moves_samples(self) -> bool:
        """Whether the stretch, the warp or the roll moves samples along the sample axis (``positions``)."""
        return self.stretch != 1.0 or self.warp is not None or bool(self.roll)

    def positions(self, crop: tuple[int, ...], zaxis: int) -> np.ndarray:
        """Where the stretch, warp and roll read each output sample; made once per crop (its inputs and labels
        share it)."""
        if self._positions is None:
            self._positions = sample_positions(crop, zaxis, self.stretch, self.warp, self.warp_max, self.roll)
        return self._positions


def _lateral_axes(spec: CropSpec) -> tuple[bool, ...]:
    """Which crop axes are lateral (inline or crossline) and may be flipped."""
    return tuple(ax != 2 for ax in spec.volume_axes)


def draw_plan(aug: Augmentation | None, spec: CropSpec, rng: np.random.Generator) -> AugmentPlan:
    """Draw the plan for one crop; always consumes the same number of draws."""
    u = rng.random(9)
    if aug is None:
        return AugmentPlan(flips=tuple(False for _ in spec.size))
    lateral = _lateral_axes(spec)
    flips = tuple(bool(lat and u[i] < aug.p_flip) for i, lat in enumerate(lateral))
    lo, hi = aug.scale_range
    scale = lo + (hi - lo) * u[5] if u[4] < aug.p_scale else 1.0
    shift = 0
    if u[7] < aug.p_shift and aug.max_shift > 0:
        shift = int(np.floor(u[8] * (2 * aug.max_shift + 1))) - aug.max_shift
    plan = AugmentPlan(
        flips=flips, swap=bool(u[3] < aug.p_swap and _can_swap(spec)), scale=float(scale),
        polarity=-1.0 if u[6] < aug.p_polarity else 1.0, noise=bool(u[2] < aug.p_noise), shift=shift,
        noise_seed=int(rng.integers(2**63)),
    )
    if aug.p_stretch > 0:
        v = rng.random(2)
        lo, hi = aug.stretch_range
        if v[0] < aug.p_stretch and 2 in spec.volume_axes:
            plan.stretch = float(lo * (hi / lo) ** v[1])  # log-uniform: squeeze by 1/f as likely as stretch by f
    if aug.p_warp > 0:
        u_warp, seed = rng.random(), int(rng.integers(2**63))
        if u_warp < aug.p_warp and aug.warp_max > 0 and 2 in spec.volume_axes:
            plan.warp, plan.warp_max = seed, float(aug.warp_max)
    if aug.p_roll > 0:
        v = rng.random(2)
        if v[0] < aug.p_roll and 2 in spec.volume_axes:
            plan.roll = float(0.2 + 0.6 * v[1])  # a cut between a fifth and four fifths of the way down
    return plan


def _can_swap(spec: CropSpec) -> bool:
    if spec.orientation in _SWAPPED:
        return True
    # time slices and 3D crops swap by transposing, which needs equal inline and crossline sizes
    return spec.size[0] == spec.size[1]


def cut_spec(spec: CropSpec, plan: AugmentPlan) -> CropSpec:
    """The spec to cut with: a swapped vertical crop is cut along the other direction."""
    if plan.swap and spec.orientation in _SWAPPED:
        return CropSpec(spec.size, _SWAPPED[spec.orientation])
    return spec


def shifted_center(center: tuple[int, int, int], plan: AugmentPlan) -> tuple[int, int, int]:
    """Centre moved by the plan's vertical shift."""
    return (int(center[0]), int(center[1]), int(center[2]) + plan.shift)


def apply_geometry(a: np.ndarray, spec: CropSpec, plan: AugmentPlan, lead: int) -> np.ndarray:
    """Flips, the transpose-swap, the vertical stretch, the warp and the roll, on the crop axes of ``a`` (after
    ``lead`` leading axes), in place. Float arrays (inputs) are resampled linearly, integer arrays (labels) by nearest
    sample, so a crop's labels move with its reflectors."""
    out = a
    for i, flip in enumerate(plan.flips):
        if flip:
            out = np.flip(out, axis=lead + i)
    if plan.swap and spec.orientation not in _SWAPPED:
        out = np.swapaxes(out, lead, lead + 1)
    if plan.moves_samples:
        pos = plan.positions(a.shape[lead:], spec.volume_axes.index(2))
        # the resampled array is new memory, so it is written back without another copy
        a[...] = resample_axis(out, lead + spec.volume_axes.index(2), pos.reshape((1,) * lead + pos.shape))
    elif out is not a:
        a[...] = out.copy()  # the views above alias ``a``; copy before writing back
    return a


def _mirror(pos: np.ndarray, n: int) -> np.ndarray:
    """Positions past the crop's ends mirrored back inside (once; then clipped), so the crop keeps its texture
    there (a reflector sequence read backwards) instead of a constant edge value."""
    pos = np.where(pos < 0, -pos, pos)
    pos = np.where(pos > n - 1, 2 * (n - 1) - pos, pos)
    return np.clip(pos, 0, n - 1)


def _stretched(pos: np.ndarray, n: int, factor: float) -> np.ndarray:
    c = (n - 1) / 2.0
    return _mirror(c + (pos - c) / factor, n)


def stretch_positions(n: int, factor: float) -> np.ndarray:
    """Where each of n output samples reads the input when stretching by ``factor`` about the centre (a
    squeeze, factor < 1, reads past the crop's ends: mirrored back inside)."""
    return _stretched(np.arange(n, dtype=np.float64), n, factor)


def warp_shifts(crop: tuple[int, ...], zaxis: int, max_shift: float, seed: int) -> np.ndarray:
    """Vertical displacements (samples, float64, shaped like the crop) of one warp: output sample z of a trace
    reads the crop at z + shift. What changes away from a picked line, in one smooth field:

    - folds: two plane waves across the lateral axes (wavelengths WARP_WAVELENGTHS traces, random directions),
      scaled so that their largest displacement relative to the centre sample is up to ``max_shift`` samples;
    - folding that grows with depth: the fold's amplitude rises from a random share of itself at the top to all
      of it at the bottom, so layers thicken and thin from trace to trace;
    - on half the warps, a fault: the traces on the side of a random line through the crop's middle half away
      from the centre trace move by a throw of up to ``max_shift`` samples.

    The crop's centre sample stays in place (as in the stretch: a patch model's label is its class), so every
    displacement is at most 2 x ``max_shift``.
    """
    rng = np.random.default_rng(seed)
    lateral = [ax for ax in range(len(crop)) if ax != zaxis]
    grids = np.meshgrid(*[np.arange(crop[ax], dtype=np.float64) for ax in lateral], indexing="ij")
    middle = tuple(crop[ax] // 2 for ax in lateral)  # the centre trace (crops are centred on index size // 2)
    wave = np.zeros(grids[0].shape if grids else ())
    for _ in range(2):
        direction = rng.standard_normal(len(lateral))
        direction /= np.linalg.norm(direction) or 1.0
        k = 2 * np.pi / rng.uniform(*WARP_WAVELENGTHS)
        phase = k * sum(d * g for d, g in zip(direction, grids)) + rng.uniform(0, 2 * np.pi)
        wave += rng.uniform(0.5, 1.0) * np.sin(phase)
    n = crop[zaxis]
    top = rng.uniform(0.0, 1.0)
    gain = top + (1.0 - top) * np.arange(n, dtype=np.float64) / max(n - 1, 1)
    shape = [1] * len(crop)
    shape[zaxis] = n
    lat_shape = [crop[ax] if ax != zaxis else 1 for ax in range(len(crop))]
    folds = wave.reshape(lat_shape) * gain.reshape(shape)
    folds -= folds[tuple(c // 2 for c in crop)]  # relative to the crop's centre sample, which stays in place
    folds *= rng.uniform(0.0, max_shift) / (float(np.abs(folds).max()) or 1.0)
    fault = np.zeros(wave.shape)
    if rng.random() < 0.5:
        normal = rng.standard_normal(len(lateral))
        normal /= np.linalg.norm(normal) or 1.0
        line = [rng.uniform(0.25, 0.75) * (crop[ax] - 1) for ax in lateral]
        side = sum(d * (g - c) for d, g, c in zip(normal, grids, line)) > 0
        side = ~side if side[middle] else side  # the side away from the centre trace moves
        fault = np.where(side, rng.uniform(-max_shift, max_shift), 0.0)
    return folds + fault.reshape(lat_shape)


def sample_positions(crop: tuple[int, ...], zaxis: int, stretch: float = 1.0, warp: int | None = None,
                     warp_max: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Where each output sample reads the cut crop along the sample axis ``zaxis``: the warp's displaced
    position (mirrored), then stretched about the centre, then rolled (``roll_positions``). Shaped like the crop
    (1 along the lateral axes when there is no warp)."""
    n = crop[zaxis]
    shape = [1] * len(crop)
    shape[zaxis] = n
    pos = np.arange(n, dtype=np.float64).reshape(shape)
    if warp is not None:
        pos = _mirror(pos + warp_shifts(crop, zaxis, warp_max, warp), n)
    if stretch != 1.0:
        pos = _stretched(pos, n, stretch)
    return np.take(pos, roll_positions(n, roll), axis=zaxis) if roll else pos


def roll_positions(n: int, share: float) -> np.ndarray:
    """Output sample order of a roll: the crop is cut ``share`` of the way down and its lower part put on top, so
    every unit in it meets, across the cut, a neighbour it need not meet anywhere in the survey. What a model learns
    from the crop's layers in their picked order (the unit below this one is that class) no longer holds there,
    and the textures themselves must tell the classes apart, as away from the picks, where units thin out, pinch
    out and change their order. Whole samples move (no interpolation), so labels stay exact."""
    cut = min(max(int(round(share * n)), 1), n - 1) if n > 1 else 0
    return np.roll(np.arange(n), n - cut)


def resample_axis(a: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """``a`` read at positions ``pos`` (broadcastable to ``a``) along ``axis`` (new array): linear for floats,
    nearest for integers."""
    n = a.shape[axis]
    if not np.issubdtype(a.dtype, np.floating):
        return np.take_along_axis(a, np.broadcast_to(np.rint(pos).astype(np.intp), _bshape(a, pos)), axis=axis)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0).astype(a.dtype)
    lo = np.take_along_axis(a, np.broadcast_to(i0, _bshape(a, pos)), axis=axis)
    lo *= 1 - w
    lo += np.take_along_axis(a, np.broadcast_to(i1, _bshape(a, pos)), axis=axis) * w
    return lo


def _bshape(a: np.ndarray, pos: np.ndarray) -> tuple[int, ...]:
    return np.broadcast_shapes(a.shape, pos.shape)


def stretch_axis(a: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """``a`` stretched along ``axis`` by ``factor`` (new array): linear for floats, nearest for integers."""
    shape = [1] * a.ndim
    shape[axis] = a.shape[axis]
    return resample_axis(a, axis, stretch_positions(a.shape[axis], factor).reshape(shape))


def apply_amplitude(x: np.ndarray, plan: AugmentPlan, aug: Augmentation | None) -> None:
    """Scaling, polarity and noise on the (normalised) input crop, in place."""
    factor = plan.scale * plan.polarity
    if factor != 1.0:
        x *= np.float32(factor)
    if plan.noise and aug is not None:
        noise = np.random.default_rng(plan.noise_seed).standard_normal(x.shape, dtype=np.float32)
        x += noise * np.float32(aug.noise_std)


def normalise(x: np.ndarray, mean: float, std: float) -> None:
    """(x - mean) / std in place, with the survey's statistics."""
    if not std > 0:
        raise AugmentError(f"normalisation std must be > 0, got {std} (is the volume constant?)")
    x -= np.float32(mean)
    x *= np.float32(1.0 / std)
