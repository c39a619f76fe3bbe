"""What a training job shows in TensorBoard: a labelled confusion matrix, a preview in the classes' own colours, and
enough loss points for a short run to draw a curve."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from daemon.common.palette import class_colours, class_rgb
from daemon.executor.predict.figures import class_cmap
from daemon.executor.training.loop import TrainControl, train
from daemon.executor.training.summary import confusion_figure, confusion_image, log_interval, preview_image
from daemon.kinds.train_spec import TrainSection
from daemon.viewers.panels import SlicePanel, Axis
from tests.daemon.test_training import _batches, _model

NAMES = ["sand", "shale", "salt"]
CM = np.array([[50, 3, 0], [4, 30, 6], [0, 0, 7]])


def test_the_confusion_matrix_names_its_classes_axes_and_counts() -> None:
    fig = confusion_figure(CM, NAMES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert "predicted" in ax.get_xlabel() and "true" in ax.get_ylabel()
    cells = [t.get_text() for t in ax.texts]
    for count in CM.ravel():
        assert any(c.startswith(str(count)) for c in cells), (count, cells)
    assert any("94%" in c for c in cells)  # 50 of the 53 true sand voxels
    image = confusion_image(CM, NAMES)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 200


def test_the_confusion_colours_are_shares_of_each_true_class() -> None:
    """Colour follows the row share, not the count: salt's 7 of 7 is as dark as it gets, sand's 50 of 57 lighter."""
    fig = confusion_figure(CM, NAMES)
    shades = fig.axes[0].images[0].get_array()
    assert shades[2, 2] == 1.0 and np.isclose(shades[0, 0], 50 / 53) and shades[0, 2] == 0


def test_preview_figures_and_viewer_give_a_class_the_same_colour() -> None:
    image = np.random.default_rng(0).normal(size=(6, 4))
    prediction = np.array([[0, 1, 2, 11]] * 6)
    rgb = preview_image(image, prediction, 12)
    assert np.array_equal(rgb[:, 4:], class_rgb(12)[prediction])  # the predicted half: the palette's colours
    hexes = class_colours(12)
    cmap = class_cmap(12)
    assert ["#%02x%02x%02x" % tuple(round(255 * c) for c in cmap(k)[:3]) for k in range(12)] == hexes
    panel = SlicePanel("x", Axis("crossline"), Axis("time", down=True))
    panel.show_classes(np.zeros((2, 2)), 12)
    assert list(panel.class_mapper.palette) == hexes


def test_a_short_run_logs_a_loss_curve(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainSection(epochs=2, checkpoint_every_steps=None, checkpoint_every_minutes=None)  # no log interval set
    torch.manual_seed(0)
    train(_model(), _batches(1, 12), tmp_path, config=cfg, control=TrainControl(class_names=NAMES))
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 25))


def test_the_logging_interval_gives_fifty_points_or_more() -> None:
    assert [log_interval(None, n) for n in (7, 100, 2_500, 10_000, 1_000_000)] == [1, 2, 50, 50, 50]
    assert all(n // log_interval(None, n) >= min(n, 50) for n in (7, 49, 50, 99, 100, 2_499, 2_500, 10**6))
    assert log_interval(None, None) == 50 and log_interval(7, 100) == 7  # unknown length; the user's own
