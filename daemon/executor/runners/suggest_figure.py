"""The `suggest` job's picture: for each suggested line, the predicted classes (the one palette,
daemon/common/palette.py) and the confidence, the region to pick outlined, on the survey's line numbers and times."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # executors have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from daemon.executor.predict.figures import class_cmap  # noqa: E402
from workers.names import work_path  # noqa: E402


def _section(volume: Any, kind: str, index: int) -> np.ndarray:
    """[lateral, samples] of an inline or a crossline."""
    return np.asarray(volume[index] if kind == "inline" else volume[:, index])


def draw_suggestions(path: Path, rows: list[dict[str, Any]], volumes: Any, survey: Any, classes: list[str],
                     title: str) -> Path:
    """One row per suggestion: classes | confidence, the region as a black box; written atomically as PNG."""
    n_classes = max(len(classes), 1)
    cmap, norm = class_cmap(n_classes), BoundaryNorm(np.arange(n_classes + 1) - 0.5, n_classes)
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.6 * len(rows) + 0.8), squeeze=False)
    samples = np.asarray(survey.samples, dtype=float)
    for (ax_l, ax_c), r in zip(axes, rows):
        across = np.asarray(survey.crosslines if r["kind"] == "inline" else survey.inlines, dtype=float)
        extent = (across[0], across[-1], samples[-1], samples[0])
        labels = _section(volumes.labels, r["kind"], r["index"]).T
        conf = _section(volumes.confidence, r["kind"], r["index"]).T
        ax_l.imshow(labels, cmap=cmap, norm=norm, aspect="auto", extent=extent, interpolation="nearest")
        im = ax_c.imshow(conf, cmap="magma", vmin=0, vmax=1, aspect="auto", extent=extent, interpolation="nearest")
        for ax in (ax_l, ax_c):
            ax.add_patch(Rectangle((r["from"], r["time_from"]), r["to"] - r["from"], r["time_to"] - r["time_from"],
                                   fill=False, edgecolor="black" if ax is ax_l else "cyan", linewidth=1.8))
            ax.set_xlabel(r["across"])
            ax.set_ylabel(f"{survey.geometry.sample_unit}")
        ax_l.set_title(f"#{r['rank']} {r['kind']} {r['line']}: predicted classes", fontsize=9)
        ax_c.set_title(f"confidence (score {r['score']:.3f}; pick {r['across']}s {r['from']}-{r['to']})", fontsize=9)
        fig.colorbar(im, ax=ax_c, fraction=0.04)
    fig.legend(handles=[Patch(color=cmap(k), label=name) for k, name in enumerate(classes)],
               loc="lower center", ncol=min(len(classes), 8), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    tmp = work_path(path, "tmp")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
