"""How a model file is applied: the apply settings read from its info, completed with defaults that are fast.

One recipe serves the whole-volume job and the streaming sessions, so both cut the same tiles and get the same
numbers. The model file's `input_spec` says how the model reads a survey (keys as written by the train job):

    apply_kind   "fcn" (whole slabs, tiled) or "patch" (one crop per voxel); default from the model name
    crop         the training crop ([a, b] 2D, [a, b, c] 3D); default the model's input_shape
    orientation  inline | crossline | 3d (time slices are not applied by the engine)
    apply_orientation
                 how a whole volume is best applied (train jobs: both for a 2D model trained on inline and
                 crossline sections, split for an ensemble of them), optional
    volumes      the survey volumes stacked as channels
    picks        the pick set the model was trained on (drawn on figures), optional
    context      neighbouring sections on each side as extra channels (2D fcn models; tiling.VolumeReader)
    smooth       Gaussian sigmas (inlines, crosslines, samples) over the probabilities before the argmax
                 (daemon/executor/predict/smoothing.py; the train job's apply.smooth), optional

and `normalisation` holds {"volumes": [{"mean", "std"}, ...]} (or one {"mean", "std"} for every channel).

Default tiles (fcn): whole sections up to 512 x 512 with a 32-voxel overlap. The unet's speed per voxel is about
the same for any tile of a few hundred voxels a side, but small tiles pay for their overlap: 128 x 128 tiles with
a quarter overlap run every voxel 1.8 times, a 951 x 462 F3 inline in two 512 x 512 tiles only 1.1 times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from daemon.executor.predict.apply import PredictError
from daemon.executor.predict.smoothing import check_sigma
from daemon.kinds.data import DEFAULT_VOLUME
from daemon.kinds.predict import ORIENTATIONS_2D, PRECISIONS, split_problem

MAX_TILE_2D = 512
MAX_TILE_3D = 96
DEFAULT_OVERLAP = 32
KIND_OF_MODEL = {"unet": "fcn", "patchcnn": "patch"}


@dataclass(frozen=True)
class ApplyRecipe:
    """Everything apply_block / predict_volume need besides the model and the data."""

    kind: str                                     # fcn | patch
    volumes: tuple[str, ...]
    normalisation: tuple[tuple[float, float], ...]
    crop: tuple[int, ...]
    orientation: str                              # inline | crossline | both | split | 3d
    classes: tuple[str, ...]
    picks: str | None = None
    tile: tuple[int, ...] | None = None           # explicit tile (fcn); None: default_tile(shape)
    overlap: tuple[int, ...] | None = None
    stride: int = 1
    context: int = 0                              # sections on each side as extra channels (2D fcn)
    smooth: tuple[float, float, float] | None = None  # probability smoothing sigmas (smoothing.py)
    precision: str = "auto"                       # the forward pass's number format (spec.PRECISIONS)

    @property
    def n_channels(self) -> int:
        """Channels of the data applied to: one per volume (the model takes 2 * context + 1 per volume)."""
        return len(self.volumes)

    def default_tile(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Whole sections up to MAX_TILE_2D a side (2D), or up to MAX_TILE_3D cubes, never smaller than the crop."""
        ni, nx, ns = (int(n) for n in shape)
        if len(self.crop) == 3:
            return tuple(max(c, min(n, MAX_TILE_3D)) for c, n in zip(self.crop, (ni, nx, ns)))
        lateral = {"inline": nx, "crossline": ni}.get(self.orientation, min(ni, nx))  # both ways: the shorter
        return (min(lateral, MAX_TILE_2D), min(ns, MAX_TILE_2D))

    def apply_kwargs(self, shape: Sequence[int]) -> dict[str, Any]:
        """Keyword arguments for apply_block / predict_volume on a volume or block of this shape."""
        kw: dict[str, Any] = {"kind": self.kind, "normalisation": self.normalisation, "n_classes": len(self.classes),
                              "precision": self.precision}
        orientation = "inline" if self.orientation == "3d" else self.orientation
        if self.kind == "patch":
            kw.update(crop=self.crop, orientation=orientation, stride=self.stride)
            return kw
        tile = self.tile or self.default_tile(shape)
        overlap = self.overlap or tuple(min(DEFAULT_OVERLAP, t // 4) for t in tile)
        kw.update(tile=tile, overlap=overlap, orientation=orientation)
        if self.context:
            kw["context"] = self.context
        if self.smooth:
            kw["smooth"] = self.smooth
        return kw

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (stream.open result, job result)."""
        return {"kind": self.kind, "volumes": list(self.volumes), "channels": self.n_channels,
                "crop": list(self.crop), "orientation": self.orientation, "tile": list(self.tile or []) or None,
                "overlap": list(self.overlap or []) or None, "stride": self.stride, "context": self.context,
                "smooth": list(self.smooth) if self.smooth else None, "precision": self.precision}


def recipe_of(info: Any, tile: Sequence[int] | None = None, overlap: int | Sequence[int] | None = None,
              orientation: str | None = None, stride: int = 1, whole_volume: bool = True,
              smooth: Sequence[float] | None = None, precision: str = "auto") -> ApplyRecipe:
    """The recipe of a model file's info (daemon.executor.modelfile.ModelInfo), with optional overrides.

    Without an ``orientation``, a whole volume is applied the way the model file advises (``apply_orientation``:
    ``both`` for a 2D model trained on inline and crossline sections, ``split`` for an ensemble of them), blocks
    of a stream (``whole_volume=False``) along the model's training orientation. Raises PredictError naming the problem
    when the model cannot be applied by the engine. ``smooth`` replaces the model file's smoothing sigmas (all
    zero: none). ``precision`` is the forward pass's number format (spec.PRECISIONS; 'auto' resolves by device
    when applied).
    """
    if precision not in PRECISIONS:
        raise PredictError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    spec = dict(info.input_spec or {})
    kind = spec.get("apply_kind") or KIND_OF_MODEL.get(info.name)
    if kind not in ("fcn", "patch"):
        raise PredictError(f"model {info.name!r} does not say how to apply it: its input_spec needs apply_kind "
                           "'fcn' (class map per input) or 'patch' (one class per crop)")
    context = int(spec.get("context", 0) or 0)
    if context and kind != "fcn":
        raise PredictError("the model was trained with context sections as extra channels; the apply engine "
                           "takes them for fully convolutional 2D models only (apply_kind 'fcn')")
    crop = tuple(int(c) for c in (spec.get("crop") or info.input_shape))
    own = (spec.get("apply_orientation") if whole_volume else None) or spec.get("orientation") or (
        "3d" if len(crop) == 3 else "inline")
    if own == "time":
        raise PredictError("the model was trained on time slices; the apply engine applies inline, crossline "
                           "or 3d models")
    chosen = orientation or own
    if len(crop) == 3:
        chosen = "3d"
    elif chosen not in ORIENTATIONS_2D:
        raise PredictError(f"orientation must be inline, crossline, both or split for a 2D model, got {chosen!r}")
    elif problem := split_problem(chosen, info.params):
        raise PredictError(f"orientation {problem}")
    if context and len(crop) != 2:
        raise PredictError("the model was trained with context sections but on 3D crops; context applies to 2D "
                           "models only")
    per_volume = 2 * context + 1
    volumes = tuple(spec.get("volumes") or ([DEFAULT_VOLUME] if info.in_channels == per_volume else []))
    if len(volumes) * per_volume != info.in_channels:
        raise PredictError(f"the model takes {info.in_channels} input channels but its input_spec names "
                           f"{len(volumes)} volumes ({', '.join(volumes) or 'none'})"
                           + (f" with {context} context sections on each side" if context else ""))
    tile_t = tuple(int(t) for t in tile) if tile else None
    if tile_t is not None and len(tile_t) != len(crop):
        raise PredictError(f"tile {list(tile_t)} must have {len(crop)} sizes like the model's crop {list(crop)}")
    overlap_t = None if overlap is None else (
        (int(overlap),) * len(crop) if isinstance(overlap, int) else tuple(int(o) for o in overlap))
    classes = tuple(info.classes) if info.classes else tuple(f"class{k}" for k in range(info.n_classes))
    return ApplyRecipe(kind=kind, volumes=volumes, normalisation=normalisation_of(info.normalisation, len(volumes)),
                       crop=crop, orientation=chosen, classes=classes, picks=spec.get("picks"), tile=tile_t,
                       overlap=overlap_t, stride=int(stride), context=context,
                       smooth=check_sigma(smooth if smooth is not None else spec.get("smooth")), precision=precision)


def normalisation_of(doc: dict[str, Any] | None, n_channels: int) -> tuple[tuple[float, float], ...]:
    """(mean, std) per channel from a model file's normalisation document; (0, 1) when it has none."""
    doc = doc or {}
    if isinstance(doc.get("volumes"), list) and doc["volumes"]:
        pairs = [(float(v["mean"]), float(v["std"])) for v in doc["volumes"]]
    elif "mean" in doc and "std" in doc:
        pairs = [(float(doc["mean"]), float(doc["std"]))] * n_channels
    else:
        pairs = [(0.0, 1.0)] * n_channels
    if len(pairs) != n_channels:
        raise PredictError(f"the model's normalisation has {len(pairs)} (mean, std) pairs for {n_channels} "
                           "input volumes")
    return tuple(pairs)
