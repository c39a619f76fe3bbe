"""The `train` job kind: a model trained on crops around a survey's picks, fed by the shared-memory worker pool.

The spec and its submit-time check are torch-free (they run in the daemon's main process): the job file's
`model`, `optim`, `schedule` and `train` sections are checked with daemon.kinds.model_params.validate_model_params and
daemon.kinds.train_config.parse_sections, the survey, picks and volumes against the home, and a user model by
building it in a child process. The runner (in an executor) is daemon.executor.training.job.run_train_job.
docs/train-job.md documents every key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.common.home import model_file, picks_file, resolve, survey_folder
from daemon.kinds.data import CropSection, name_problem
from daemon.kinds.registry import CheckContext, JobKind, JobSpec, register
from daemon.kinds.model_params import validate_model_params
from daemon.kinds.train_config import ConfigError, parse_sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSection(_Section):
    kind: Literal["block", "random"] = Field("block", description="block: whole blocks of the inline-crossline "
                                             "plane held out (honest); random: points (scores memory)")
    block: int = Field(16, ge=1, description="block size in traces (block split)")
    gap: int | None = Field(None, ge=0, description="training points this close to a held-out block are dropped; "
                            "default: half the crop's lateral size")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class AugmentSection(_Section):
    p_flip: float = Field(0.0, ge=0, le=1)
    p_swap: float = Field(0.0, ge=0, le=1)
    p_scale: float = Field(0.0, ge=0, le=1)
    scale_range: tuple[float, float] = (0.8, 1.25)
    p_polarity: float = Field(0.0, ge=0, le=1)
    p_noise: float = Field(0.0, ge=0, le=1)
    noise_std: float = Field(0.1, ge=0)
    p_shift: float = Field(0.0, ge=0, le=1)
    max_shift: int = Field(2, ge=0)
    p_stretch: float = Field(0.0, ge=0, le=1, description="vertical stretch or squeeze about the crop centre")
    stretch_range: tuple[float, float] = Field((0.7, 1.4), description="layers look this many times thicker "
                                               "(log-uniform; within 0.5-2.0)")


class DataSection(_Section):
    survey: str = Field(description="survey name in the home (seisctl survey import ... --name NAME)")
    picks: str = Field("default", description="pick set of the survey")
    volumes: list[str] = Field(default_factory=lambda: ["seismic"], min_length=1,
                               description="volumes stacked as input channels")
    crop: CropSection
    context: int = Field(0, ge=0, le=8, description="neighbouring slices on each side as extra channels (2D)")
    batch_size: int = Field(32, ge=1, le=65536)
    batches_per_epoch: int = Field(100, ge=1)
    val_batches: int = Field(8, ge=0, description="validation batches (drawn once, the same every epoch)")
    balance: bool = Field(True, description="draw classes uniformly, then a pick of that class")
    workers: int | None = Field(None, ge=0, le=256, description="worker processes; default: the daemon's "
                                "workers.default_count; 0 makes batches in the executor itself")
    ring_slots: int = Field(8, ge=2, le=256)
    split: SplitSection = Field(default_factory=SplitSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)

    @model_validator(mode="after")
    def _context_2d(self) -> "DataSection":
        if self.context and self.crop.orientation == "3d":
            raise ValueError("context applies to 2D crops only; set context: 0 for a 3d crop")
        return self


class ModelSection(_Section):
    name: str = Field(description="patchcnn, unet or user")
    params: dict[str, Any] = Field(default_factory=dict)


class TrainSpec(JobSpec):
    kind: Literal["train"] = "train"
    output: str = Field(description="model name: the model file is written to models/<output>.h5")
    overwrite: bool = Field(False, description="replace an existing model file of that name")
    data: DataSection
    model: ModelSection
    optim: dict[str, Any] = Field(default_factory=dict, description="see docs/training.md")
    schedule: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)

    def input_files(self) -> list[tuple[str, str]]:
        """A user model's file and an absolute init_from are read from outside the home: checked at submit."""
        out = []
        if self.model.name == "user" and isinstance(self.model.params.get("path"), str):
            out.append(("model.params.path", self.model.params["path"]))
        init = self.train.get("init_from")
        if isinstance(init, str) and Path(init).expanduser().is_absolute():
            out.append(("train.init_from", init))
        return out


def check_train(spec: TrainSpec, ctx: CheckContext) -> list[str]:
    """Every semantic problem of a train job file, each naming its key; empty when it can run."""
    problems = [p for p in [name_problem("output", spec.output)] if p]
    if not problems and not spec.overwrite and model_file(ctx.home, spec.output).exists():
        problems.append(f"output: a model {spec.output!r} already exists (set overwrite: true, choose another "
                        f"name, or `seisctl models rm {spec.output}`)")
    try:
        _, _, cfg = parse_sections(spec.optim, spec.schedule, spec.train)
        if cfg.init_from and not resolve(ctx.home, cfg.init_from).is_file():
            problems.append(f"train.init_from: {cfg.init_from} does not exist (relative paths start at the home)")
        world = cfg.distributed.world_size
        if spec.data.batch_size % world:
            problems.append(f"data.batch_size: {spec.data.batch_size} does not split evenly over "
                            f"train.distributed.world_size {world} ranks; use a multiple of {world}")
    except ConfigError as exc:
        problems += exc.problems
    data_problems, _ = _check_data(spec.data, ctx.home)
    problems += data_problems
    problems += _augment_problems(spec.data.augment)
    crop = list(spec.data.crop.size)
    problems += validate_model_params(spec.model.name, spec.model.params, crop)
    if spec.model.name == "patchcnn" and spec.data.crop.orientation != "3d" and min(crop) < 4:
        problems.append(f"data.crop.size: patchcnn needs crops of at least 4 x 4, got {crop}")
    return problems


def _augment_problems(section: AugmentSection | None) -> list[str]:
    """Ranges the schema cannot express (e.g. stretch_range inside 0.5-2.0), as the workers will check them."""
    from workers.augment import AugmentError, Augmentation

    try:
        if section is not None:
            Augmentation(**section.model_dump())
    except AugmentError as exc:
        return [f"data.augment: {exc}"]
    return []


def check_user_model_file(spec: TrainSpec, ctx: CheckContext) -> list[str]:
    """A user model is built and run once on zeros in a child process (seconds: a slow check, off the loop)."""
    if spec.model.name != "user":
        return []
    from daemon.kinds.model_params import COMMON_PARAMS
    from daemon.kinds.user_model_check import check_user_model

    d = spec.data
    channels = len(d.volumes) * (2 * d.context + 1)
    with np.load(picks_file(ctx.home, d.survey, d.picks)) as z:
        n_classes = max(len(z["class_names"]), 2)
    params = {k: v for k, v in spec.model.params.items() if k != "path" and k not in COMMON_PARAMS}  # seisd's keys
    return [f"model.params.path: {p}" for p in
            check_user_model(spec.model.params["path"], channels, n_classes, list(d.crop.size), params)]


def _check_data(d: DataSection, home: Path) -> tuple[list[str], int]:
    """Problems with the survey, pick set, volumes and crop; and the number of classes of the picks."""
    if (p := name_problem("data.survey", d.survey)):
        return [p], 0
    folder = survey_folder(home, d.survey)
    if not (folder / "survey.json").is_file():
        return [f"data.survey: no survey {d.survey!r} in this home (import it: seisctl survey import FILE.sgy "
                f"--name {d.survey})"], 0
    doc = json.loads((folder / "survey.json").read_text())
    problems = [f"data.volumes: survey {d.survey!r} has no volume {v!r} (it has {', '.join(doc['volumes'])})"
                for v in d.volumes if v not in doc.get("volumes", {})]
    shape = _survey_shape(doc)
    axes = {"inline": (1, 2), "crossline": (0, 2), "time": (0, 1), "3d": (0, 1, 2)}[d.crop.orientation]
    if shape and any(n > shape[a] for n, a in zip(d.crop.size, axes)):
        problems.append(f"data.crop.size: {list(d.crop.size)} does not fit the survey's "
                        f"{[shape[a] for a in axes]} along the {d.crop.orientation} crop's axes")
    picks = picks_file(home, d.survey, d.picks)
    if not picks.is_file():
        problems.append(f"data.picks: survey {d.survey!r} has no pick set {d.picks!r} (seisctl picks import "
                        f"{d.survey} FILES --set {d.picks})")
        return problems, 0
    with np.load(picks) as z:
        cls, names = z["cls"], [str(n) for n in z["class_names"]]
        points = np.stack([z["i"], z["x"], z["s"]], axis=1)
    present = np.unique(cls)
    if len(present) < 2:
        problems.append(f"data.picks: pick set {d.picks!r} has points of {len(present)} class"
                        f"{'' if len(present) == 1 else 'es'} ({', '.join(names[int(c)] for c in present)}); "
                        "training needs at least two")
    problems += _split_problems(d, points)
    return problems, len(names)


def _split_problems(d: DataSection, points: np.ndarray) -> list[str]:
    """Try the split at submit (numpy only, fast) so a split that leaves no training points is refused here."""
    from workers.crops import CropSpec
    from workers.split import SplitError

    try:
        split_picks(points, d, CropSpec(tuple(d.crop.size), d.crop.orientation))
    except SplitError as exc:
        return [f"data.split: {exc}"]
    return []


def _survey_shape(doc: dict[str, Any]) -> tuple[int, int, int] | None:
    try:
        from workers.survey import Geometry

        return Geometry.from_json(doc).shape
    except (KeyError, TypeError, ValueError):
        return None


def default_gap(crop: CropSection) -> int:
    """Half the crop's extent in the inline-crossline plane: no training crop then covers a validation point."""
    lateral = {"inline": crop.size[:1], "crossline": crop.size[:1], "time": crop.size, "3d": crop.size[:2]}
    return max(lateral[crop.orientation]) // 2


def split_picks(points: np.ndarray, d: Any, crop: Any) -> Any:
    """The job's split of pick points: blocked (default) or random."""
    from workers.split import block_split, random_split

    s = d.split
    if s.kind == "random":
        return random_split(points, s.val_fraction, s.seed)
    gap = default_gap(crop) if s.gap is None else s.gap
    return block_split(points, s.block, gap, s.val_fraction, s.seed)


register(JobKind(name="train", spec=TrainSpec, runner="daemon.executor.training.job:run_train_job", resumable=True,
                 check=check_train, slow_check=check_user_model_file,
                 doc="train a model on crops around picks (new, resume, transfer)"))
