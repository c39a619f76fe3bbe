"""Training summaries: summary.h5 (per-step loss and rate, per-epoch validation) and TensorBoard event files.

TensorBoard gets the loss every log_interval() steps (a short run too draws a curve), the validation figures, a
labelled confusion matrix and a preview slice in the classes' own colours (daemon/common/palette.py).

summary.h5 layout, appendable across resume:

    /steps/step, /steps/loss, /steps/lr, /steps/epoch        1-D, one row per optimiser step
    /epochs/epoch, /epochs/<figure> ...                     1-D, one row per validation (val_loss, macro_f1, ...)
    /epochs/confusion                                       [E, C, C] int64 confusion matrices

Rows are buffered in memory and appended when flush() is called (at epoch ends and checkpoints), with the file
opened only for that moment so a crash never leaves it open. On resume, rows after the checkpoint's step are
dropped first, since those steps are trained again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from daemon.common.palette import class_rgb

STEP_FIELDS = ("step", "epoch", "loss", "lr")
LOG_POINTS = 50     # loss points a run gives TensorBoard at the least, unless train.log_every_steps says otherwise
LOG_EVERY_MAX = 50  # ... and at most this many steps apart (long runs)


class SummaryFile:
    """Appends training history to an HDF5 file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._steps: list[tuple[int, int, float, float]] = []
        self._epochs: list[dict[str, Any]] = []

    def add_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """Buffer one step's loss and learning rate."""
        self._steps.append((step, epoch, loss, lr))

    def add_epoch(self, epoch: int, figures: dict[str, float], confusion: np.ndarray | None) -> None:
        """Buffer one epoch's validation figures and confusion matrix."""
        self._epochs.append({"epoch": epoch, "figures": dict(figures), "confusion": confusion})

    def flush(self) -> None:
        """Append the buffered rows to the file."""
        if not self._steps and not self._epochs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "a") as h5:
            if self._steps:
                columns = list(zip(*self._steps))
                steps = h5.require_group("steps")
                for name, values in zip(STEP_FIELDS, columns):
                    dtype = np.int64 if name in ("step", "epoch") else np.float64
                    _append(steps, name, np.asarray(values, dtype=dtype))
            for row in self._epochs:
                epochs = h5.require_group("epochs")
                _append(epochs, "epoch", np.asarray([row["epoch"]], dtype=np.int64))
                for name, value in row["figures"].items():
                    _append(epochs, name, np.asarray([value], dtype=np.float64))
                if row["confusion"] is not None:
                    _append(epochs, "confusion", np.asarray(row["confusion"], dtype=np.int64)[None])
        self._steps.clear()
        self._epochs.clear()

    def truncate_after(self, step: int, epoch: int) -> None:
        """Drop rows for steps >= step and epochs > epoch (resume re-trains them).

        Epoch rows are numbered by completed epochs: a checkpoint at epoch e comes after epoch e's validation
        row was written, so that row stays.
        """
        if not self.path.is_file():
            return
        with h5py.File(self.path, "a") as h5:
            _truncate(h5.get("steps"), "step", lambda s: s < step)
            _truncate(h5.get("epochs"), "epoch", lambda e: e <= epoch)


def _append(group: h5py.Group, name: str, rows: np.ndarray) -> None:
    """Append rows along axis 0 of a resizable dataset, creating it on first use."""
    if name not in group:
        group.create_dataset(name, data=rows, maxshape=(None,) + rows.shape[1:], chunks=True)
        return
    ds = group[name]
    start = ds.shape[0]
    ds.resize(start + rows.shape[0], axis=0)
    ds[start:] = rows


def _truncate(group: h5py.Group | None, key: str, keep: Any) -> None:
    """Shrink every dataset of group to the leading rows where keep(group[key]) holds."""
    if group is None or key not in group:
        return
    mask = keep(group[key][()])
    n = int(np.argmin(mask)) if not mask.all() else mask.size
    for ds in group.values():
        if ds.shape[0] > n:
            ds.resize(n, axis=0)


def log_interval(configured: int | None, total_steps: int | None) -> int:
    """Steps between loss points in TensorBoard: train.log_every_steps when set; else about LOG_POINTS points over
    the run (every step of a run shorter than that), at most LOG_EVERY_MAX steps apart."""
    if configured is not None:
        return configured
    if not total_steps:
        return LOG_EVERY_MAX
    return max(1, min(LOG_EVERY_MAX, total_steps // LOG_POINTS))


def confusion_figure(cm: np.ndarray, class_names: list[str] | None = None) -> Any:
    """A matplotlib Figure of a confusion matrix: rows true, columns predicted, each cell its count and its share of
    the true class, coloured by that share (so a rare class reads as well as a common one), axes named."""
    from matplotlib.figure import Figure  # imported late: only validation draws it

    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(k) for k in range(n)]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    side = min(14.0, 2.5 + 0.6 * n)
    fig = Figure(figsize=(side + 1.6, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    long = max(len(s) for s in names) > 6
    ax.set_xticks(range(n), names, rotation=40 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"validation: {int(cm.sum())} labelled samples", fontsize=10)
    if n <= 25:  # beyond that the numbers would not fit their cells
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                        fontsize=max(5, 10 - n // 3), color="white" if share[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class (recall)")
    return fig


def confusion_image(cm: np.ndarray, class_names: list[str] | None = None) -> np.ndarray:
    """confusion_figure as an RGB uint8 picture [H, W, 3] for TensorBoard."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(confusion_figure(cm, class_names))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def preview_image(image: np.ndarray, prediction: np.ndarray, n_classes: int) -> np.ndarray:
    """Seismic slice (grey) beside its predicted classes (the palette's class colours), as RGB uint8 [H, 2W, 3]."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    grey = (np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1) * 255).round().astype(np.uint8)
    grey_rgb = np.repeat(grey[..., None], 3, axis=-1)
    pred = np.clip(np.asarray(prediction, dtype=np.int64), 0, max(n_classes - 1, 0))
    return np.concatenate([grey_rgb, class_rgb(n_classes)[pred]], axis=1)


class TensorBoardLog:
    """Scalars, confusion-matrix images and preview images for TensorBoard, under job_dir/tensorboard."""

    def __init__(self, folder: str | Path, class_names: list[str] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in tensorboard

        self.writer = SummaryWriter(log_dir=str(folder))
        self.class_names = class_names

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log several scalars at one step."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def confusion(self, step: int, cm: np.ndarray) -> None:
        """Log a confusion matrix picture (class names, counts, shares)."""
        self.writer.add_image("val/confusion", confusion_image(cm, self.class_names), step, dataformats="HWC")

    def preview(self, step: int, image: np.ndarray, prediction: np.ndarray, n_classes: int) -> None:
        """Log a predicted preview slice beside its input."""
        self.writer.add_image("val/preview", preview_image(image, prediction, n_classes), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.flush()
        self.writer.close()


class SilentSummary(SummaryFile):
    """A summary that records nothing: data-parallel ranks other than 0 (rank 0 writes the job's history)."""

    def __init__(self) -> None:
        super().__init__(Path("/dev/null"))

    def add_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """Nothing: rank 0 records the (globally reduced) loss."""

    def add_epoch(self, epoch: int, figures: dict[str, float], confusion: np.ndarray | None) -> None:
        """Nothing: rank 0 records validation."""

    def flush(self) -> None:
        """Nothing to write."""

    def truncate_after(self, step: int, epoch: int) -> None:
        """Nothing to drop."""


class SilentTensorBoard:
    """TensorBoardLog's interface, writing nothing (data-parallel ranks other than 0)."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Nothing."""

    def confusion(self, step: int, cm: np.ndarray) -> None:
        """Nothing."""

    def preview(self, step: int, image: np.ndarray, prediction: np.ndarray, n_classes: int) -> None:
        """Nothing."""

    def close(self) -> None:
        """Nothing."""
