"""Streaming apply: a model kept loaded in an executor, applied to blocks a host application sends over the socket.

The executor's stream thread calls, per session: `StreamSession.open(home, args, device=...)` at stream.open,
`describe()` for the open reply, `apply(arrays, args)` for each stream.apply, and `close()` at stream.close.
Blocks go through daemon.executor.predict.apply_block with the model file's ApplyRecipe, the same code and tiles as the
whole-volume predict job, so a block of whole inlines gets the numbers the job writes for those inlines (for
inline-oriented 2D models every inline is independent; crossline and 3D models see only the block, mirrored at
its borders, so send blocks with a margin of half a tile).

Block rules (checked before any compute; a bad block gets StreamInputError and the session stays usable):
  - exactly one array frame;
  - shape [n_inlines, n_crosslines, n_samples] for a one-volume model, [channels, n_inlines, n_crosslines,
    n_samples] for a model of several volumes (channels in the model's volume order; also accepted with 1);
  - every size >= 1, at most MAX_BLOCK_VOXELS voxels;
  - a numeric dtype (integers or floats; converted to float32), every value finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from daemon.executor.modelfile import ModelFileError, load_model_file
from daemon.executor.predict.apply import PredictError, apply_block, prepared, resolve_device
from daemon.executor.predict.spec import resolve_precision
from daemon.executor.predict.recipe import recipe_of
from daemon.common.home import model_file
from daemon.kinds.predict import OUTPUT_NAMES

MAX_BLOCK_VOXELS = 64 * 1024 * 1024
OPTION_KEYS = ("tile", "overlap", "stride", "orientation", "smooth", "precision")


class StreamInputError(ValueError):
    """A stream.open argument or a block that cannot be used; the message says what was expected and what came."""


class StreamSession:
    """One streaming session: a loaded model, its recipe, and the chosen outputs, batch size and device."""

    def __init__(self, model: Any, info: Any, recipe: Any, outputs: Sequence[str], batch_size: int | str,
                 device: Any, name: str, session: str | None = None) -> None:
        self.model, self.info, self.recipe = model, info, recipe
        self.outputs = tuple(outputs)
        self.batch_size = batch_size
        self.device = device
        self.name = name
        self.session = session
        self.blocks = 0

    @classmethod
    def open(cls, home: Path, args: dict[str, Any], device: str = "cpu") -> "StreamSession":
        """Load the model named in args (model_path or model) onto `device`, once for the session's life."""
        path = Path(args.get("model_path") or model_file(Path(home), str(args.get("model"))))
        outputs = list(args.get("outputs") or ["labels"])
        bad = [o for o in outputs if o not in OUTPUT_NAMES]
        if bad or not outputs:
            raise StreamInputError(f"outputs: expected a non-empty list of {', '.join(OUTPUT_NAMES)}; got {outputs}")
        options = dict(args.get("options") or {})
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise StreamInputError(f"options: unknown keys {unknown}; known: {', '.join(OPTION_KEYS)}")
        batch = args.get("batch_size") or "auto"
        try:
            model, info = load_model_file(path)
            recipe = recipe_of(info, options.get("tile"), options.get("overlap"), options.get("orientation"),
                               int(options.get("stride", 1)), whole_volume=False, smooth=options.get("smooth"),
                               precision=options.get("precision", "auto"))
            dev = resolve_device(device)
        except (ModelFileError, PredictError, TypeError, ValueError) as exc:
            raise StreamInputError(f"model {args.get('model') or path.stem}: {exc}") from None
        model, _ = prepared(model, dev, len(recipe.crop))  # once here: apply_block finds it ready
        return cls(model, info, recipe, [o for o in OUTPUT_NAMES if o in outputs], batch, dev,
                   str(args.get("model") or path.stem), args.get("session"))

    def describe(self) -> dict[str, Any]:
        """The stream.open result: what the session applies and what a block must look like."""
        r = self.recipe
        doc = {"model": self.name, "classes": list(r.classes),
               "input": {"channels": r.n_channels, "volumes": list(r.volumes), "orientation": r.orientation,
                         "crop": list(r.crop), "kind": r.kind, "dtype": "float32",
                         "block": ["inline", "crossline", "sample"] if r.n_channels == 1
                         else ["channel", "inline", "crossline", "sample"]},
               "outputs": list(self.outputs), "device": str(self.device), "batch_size": self.batch_size,
               "precision": resolve_precision(r.precision, self.device)}
        if r.context:  # the model reads this many sections on each side: a block's edges are mirrored
            doc["input"]["context"] = r.context
        if r.smooth:  # probabilities smoothed within each block (its edges repeated past it)
            doc["input"]["smooth"] = list(r.smooth)
        if self.session:
            doc["session"] = self.session
        return doc

    def apply(self, arrays: Sequence[np.ndarray], args: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Outputs for one block: labels uint8 [ni, nx, ns], probabilities float32 [n_classes, ni, nx, ns],
        confidence float32 [ni, nx, ns], in the session's output order."""
        channels = self.check_block(arrays)
        try:
            out = apply_block(self.model, channels if len(channels) > 1 else channels[0], outputs=self.outputs,
                              batch_size=self.batch_size, device=self.device,
                              **self.recipe.apply_kwargs(channels[0].shape))
        except PredictError as exc:
            raise StreamInputError(str(exc)) from None
        self.blocks += 1
        return {name: out[name] for name in self.outputs}

    def check_block(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The block as float32 channel arrays [ni, nx, ns]; StreamInputError naming expected vs received."""
        n_ch = self.recipe.n_channels
        expected = ("[n_inlines, n_crosslines, n_samples]" if n_ch == 1
                    else f"[{n_ch} (channels: {', '.join(self.recipe.volumes)}), n_inlines, n_crosslines, n_samples]")
        if len(arrays) != 1:
            raise StreamInputError(f"a block is one array frame {expected}; got {len(arrays)} frames")
        block = np.asarray(arrays[0])
        if block.dtype.kind not in "iuf":
            raise StreamInputError(f"block dtype {block.dtype} is not numeric; send float32 (or any integer or "
                                   "float type)")
        if block.ndim == 3 and n_ch == 1:
            block = block[None]
        if block.ndim != 4 or block.shape[0] != n_ch:
            raise StreamInputError(f"block shape {list(block.shape)} does not fit this model: expected {expected}")
        if min(block.shape) < 1:
            raise StreamInputError(f"block shape {list(block.shape)} is empty: every size must be >= 1")
        if block[0].size > MAX_BLOCK_VOXELS:
            raise StreamInputError(f"block of {block[0].size} voxels is over the limit of {MAX_BLOCK_VOXELS}; send "
                                   "fewer inlines per block")
        data = block.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise StreamInputError(f"block holds {bad} NaN or infinite values; replace them (e.g. by 0) first")
        return [np.ascontiguousarray(c) for c in data]

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        self.model = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
