"""The train job file, whole: one pydantic model, `TrainSpec`, with every default of a train job written here once.

    TrainSpec                 kind, output, overwrite (+ name, priority, device of every job)
      data: DataSection       survey + picks, or examples (sets); volumes, crop, batches, workers; split, augment
      model: ModelSection     name and params, checked against the model's table (daemon/kinds/model_params.py)
      optim: OptimSection     optimiser
      schedule: ScheduleSection   learning-rate schedule
      train: TrainSection     mode, init_from, length, checkpoints, device options;
                              early_stop: EarlyStopSection, distributed: DistributedSection
      apply: ApplySection     how predict jobs apply the model file by default (smooth)
      distill: DistillSection after training (the teacher), one fast network (the student) trained on the whole
                              survey from the teacher's confident labels (daemon/executor/training/distill.py)

It is validated once, at submit, in the daemon's main process (torch-free); problems read `key.path: what is wrong`.
The stored spec (every default filled in) travels to the executor, which reads it back into a TrainSpec and hands
its typed sections on: data to the worker pool's recipe, optim and schedule to the optimiser, train to the loop.
What needs the home (the survey, the picks, init_from, the output) is checked in daemon/kinds/train.py.
docs/train-job.md and docs/training.md document every key.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from daemon.kinds.data import NAME, CropSection, PickSource
from daemon.kinds.limits import MAX_BATCHES_PER_EPOCH
from daemon.kinds.predict import SMOOTH_HELP, Smooth
from daemon.kinds.model_params import crop_json_schema, crop_problems, model_section_json_schema, param_problems
from daemon.kinds.registry import JobSpec
from daemon.kinds.schema import Flag, Int, Number, Section, Text, one_of, problem, problems_error, rule

MAX_WORLD_SIZE = 64


class SplitSection(Section):
    kind: Literal["block", "random"] = Field("block", description="block: whole blocks of the inline-crossline "
                                             "plane held out (honest); random: points (scores memory)")
    block: int = Field(16, ge=1, description="block size in traces (block split)")
    gap: int | None = Field(None, ge=0, description="training points this close to a held-out block are dropped; "
                            "default: half the crop's lateral size")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class AugmentSection(Section):
    # _ranges in JSON Schema, as far as it goes (low <= high is checked at submit only)
    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"properties": {"scale_range": {"items": {"exclusiveMinimum": 0}}}},
        {"properties": {"stretch_range": {"items": {"minimum": 0.5, "maximum": 2.0}}}}]})

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
    p_warp: float = Field(0.0, ge=0, le=1, description="vertical displacement that varies along the section: "
                          "folds growing with depth and, on half the warps, a fault's throw")
    warp_max: float = Field(6.0, ge=0, le=32, description="the folds' largest displacement, in samples (a "
                            "fault adds a throw of up to as much)")
    p_roll: float = Field(0.0, ge=0, le=1, description="the crop cut at a random depth and its lower part put on "
                          "top: units meet other neighbours (models that label every voxel only)")

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentSection":
        """Ranges the fields cannot express (stretch_range inside 0.5-2.0 ...), as the workers check them."""
        from workers.augment import AugmentError, Augmentation

        try:
            Augmentation(**self.model_dump())
        except AugmentError as exc:
            raise problem(str(exc)) from None
        return self


class DataSection(PickSource):
    model_config = ConfigDict(json_schema_extra={"allOf": [  # _context_2d
        {"if": {"properties": {"crop": {"properties": {"orientation": {"const": "3d"}}, "required": ["orientation"]}},
                "required": ["crop"]},
         "then": {"properties": {"context": {"const": 0}}}}]})

    survey: str | None = Field(None, description="survey name in the home: with picks, the examples are made on "
                               "the fly (else data.examples, else the examples folder's default set)",
                               json_schema_extra=NAME)
    examples: list[str] | None = Field(None, min_length=1, description="example sets (seisctl examples extract) to "
                                       "train from, from one or several surveys; instead of survey and picks")
    crop: CropSection
    context: int = Field(0, ge=0, le=8, description="neighbouring sections on each side as extra channels (2D)")
    batch_size: int = Field(32, ge=1, le=65536)
    batches_per_epoch: Annotated[int, Field(ge=1), rule(
        lambda v: v <= MAX_BATCHES_PER_EPOCH,
        f"at most {MAX_BATCHES_PER_EPOCH:,} batches per epoch, got {{value}}: an epoch ends in validation, a "
        "checkpoint and the early-stop test, so a longer run wants more epochs (train.epochs), not longer ones")] = 100
    val_batches: int = Field(8, ge=0, description="validation batches (drawn once, the same every epoch)")
    balance: bool = Field(True, description="draw classes uniformly, then a pick of that class")
    unlabelled: float = Field(0.0, ge=0.0, lt=1.0, description="per-voxel models trained from picks: the share of "
                              "each batch's crops centred anywhere in the survey instead of on a pick (for "
                              "train.consistency)")
    workers: int | None = Field(None, ge=0, le=256, description="worker processes; default: the daemon's "
                                "workers.default_count; 0 makes batches in the executor itself")
    ring_slots: int = Field(8, ge=2, le=256)
    split: SplitSection = Field(default_factory=SplitSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)

    @model_validator(mode="after")
    def _context_2d(self) -> "DataSection":
        if self.context and self.crop.orientation == "3d":
            raise ValueError("context applies to 2D crops only; set context: 0 for a 3d crop")
        if self.survey is not None and self.examples is not None:
            raise ValueError("give data.survey (examples made on the fly from its picks) or data.examples (example "
                             "sets), not both")
        return self

    @property
    def from_sets(self) -> bool:
        """True when the job trains from example sets (data.examples, or the default set when no survey is named)."""
        return self.survey is None

    @property
    def channels(self) -> int:
        """Input channels of the model: each volume, with its context slices on either side."""
        return len(self.volumes) * (2 * self.context + 1)


class ModelSection(Section):
    model_config = ConfigDict(json_schema_extra=model_section_json_schema())  # _table

    name: str = Field(description="patchcnn, unet or user")
    params: dict[str, Any] = Field(default_factory=dict, description="the model's parameters: its table in "
                                   "daemon/kinds/model_params.py (defaults are filled in when the model is built)")

    @model_validator(mode="after")
    def _table(self) -> "ModelSection":
        if (problems := param_problems(self.name, self.params)):
            raise problems_error("model", problems)
        return self


class OptimSection(Section):
    """Optimiser: adam, adamw or sgd."""

    name: Annotated[str, one_of("adam", "adamw", "sgd")] = "adam"
    lr: Annotated[Number, rule(lambda v: v > 0, "expected a positive number, got {value}",
                               exclusiveMinimum=0)] = 1e-3
    weight_decay: Number = 0.0
    betas: tuple[Number, Number] = (0.9, 0.999)
    eps: Number = 1e-8
    momentum: Number = 0.9  # sgd only
    nesterov: Flag = False  # sgd only


class ScheduleSection(Section):
    """Learning-rate schedule per step, with an optional linear warm-up; 'plateau' acts at epoch ends."""

    kind: Annotated[str, one_of("constant", "step", "cosine", "plateau")] = "constant"
    warmup_steps: Int = 0
    # step: lr * gamma every step_size
    step_size: Annotated[Int, rule(lambda v: v >= 1, "expected >= 1", minimum=1)] = 1000
    gamma: Number = 0.1
    min_lr: Number = 0.0  # cosine floor, and plateau floor
    plateau_patience: Int = 2  # epochs without improvement before reducing
    plateau_factor: Annotated[Number, rule(lambda v: 0 < v < 1, "expected a number in (0, 1)", exclusiveMinimum=0,
                                           exclusiveMaximum=1)] = 0.5


MONITORED = ("macro_f1", "pixel_accuracy", "mean_class_accuracy", "weighted_f1", "val_loss")


class EarlyStopSection(Section):
    """Stop when the monitored validation figure has not improved for `patience` epochs; keep the best weights."""

    enabled: Flag = True
    metric: Annotated[str, one_of(*MONITORED)] = "macro_f1"
    patience: Int = 5
    min_delta: Number = 0.0
    restore_best: Flag = True
    # no early stop before this epoch: a noisy validation strip can peak early by chance
    min_epochs: Annotated[Int, rule(lambda v: v >= 0, "expected >= 0", minimum=0)] = 0


class ConsistencySection(Section):
    """The unlabelled voxels of each batch (docs/train-job.md 'Consistency'): the model's own confident classes on
    the batch as it came, learnt from a noisier view of it."""

    weight: Annotated[Number, rule(lambda v: v >= 0, "expected >= 0", minimum=0)] = 0.0  # 0: off
    # the lowest top probability (the members' mean for an ensemble) that makes a voxel's class a target
    threshold: Annotated[Number, rule(lambda v: 0 < v < 1, "expected a number in (0, 1)", exclusiveMinimum=0,
                                      exclusiveMaximum=1)] = 0.9
    noise_std: Annotated[Number, rule(lambda v: v >= 0, "expected >= 0", minimum=0)] = 0.1  # the noisier view's


class PretrainSection(Section):
    """A new run's start (docs/train-job.md 'Pretraining'): before the picks are learnt, the model learns to fill
    in masked patches of crops drawn anywhere in the survey, so that its features describe the whole cube's
    textures, not only the picked ones; then its class head starts afresh."""

    steps: Annotated[Int, rule(lambda v: v >= 0, "expected >= 0", minimum=0)] = 0  # 0: off
    # the share of the crop's patches blanked (their input set to the mean, 0) for the model to fill in
    mask: Annotated[Number, rule(lambda v: 0 < v < 1, "expected a number in (0, 1)", exclusiveMinimum=0,
                                 exclusiveMaximum=1)] = 0.5
    patch: Annotated[Int, rule(lambda v: v >= 1, "expected >= 1", minimum=1)] = 8  # the patches' side, voxels


class DistributedSection(Section):
    """Data-parallel training: world_size ranks, each taking B / world_size rows of every batch."""

    world_size: Annotated[Int, rule(lambda v: 1 <= v <= MAX_WORLD_SIZE,
                                    f"expected 1..{MAX_WORLD_SIZE}, got {{value}}", minimum=1,
                                    maximum=MAX_WORLD_SIZE)] = 1
    backend: Annotated[str, one_of("auto", "gloo", "nccl")] = "auto"  # auto: nccl on CUDA, gloo on CPU


class TrainSection(Section):
    """How long to train, checkpoints, modes and device options."""

    model_config = ConfigDict(json_schema_extra={"allOf": [  # _start_for_mode
        {"if": {"properties": {"mode": {"enum": ["resume", "transfer"]}}, "required": ["mode"]},
         "then": {"required": ["init_from"], "properties": {"init_from": {"type": "string", "minLength": 1}}}}]})

    mode: Annotated[str, one_of("new", "resume", "transfer")] = "new"
    # resume/transfer: a checkpoint (.pt) or a model file (.h5); relative paths start at the home
    init_from: Annotated[Text | None, Field(validate_default=True)] = None
    # transfer: how many of the last parameterised layers stay trainable
    trainable_layers: Annotated[Int, rule(lambda v: v >= 1, "expected >= 1", minimum=1)] = 1
    epochs: Annotated[Int, rule(lambda v: v >= 1, "expected >= 1", minimum=1)] = 30
    # stop after this many optimiser steps in all (before the epochs are done)
    max_steps: Annotated[Int | None, rule(lambda v: v is None or v >= 1, "expected >= 1 or null", minimum=1)] = None
    # a time budget: no epoch is begun that would end past it (the time before a resume counts)
    max_minutes: Annotated[Number | None, rule(lambda v: v is None or v > 0,
                                               "expected a positive number or null", exclusiveMinimum=0)] = None
    # what max_minutes counts: "wall" (the clock on the wall), or "cpu": the training process's own CPU time divided
    # by its torch threads, so a machine busy with other work stretches the budget instead of cutting epochs
    budget_clock: Annotated[str, one_of("wall", "cpu")] = "wall"
    # max_minutes stops no run before this many epochs in all (with refit: true, the selection's and the refit's
    # together): a busy machine makes the run take longer instead of learning less (two torch processes on two
    # cores spend 2.3x the CPU per step, so neither clock counts work)
    budget_min_epochs: Annotated[Int, rule(lambda v: v >= 0, "expected >= 0", minimum=0)] = 0
    seed: Int = 0
    checkpoint_every_steps: Int | None = 500
    checkpoint_every_minutes: Number | None = 10.0
    amp: Flag = True  # CUDA only: bfloat16/float16 autocast
    channels_last: Flag = True  # CUDA only, 2D models
    progress_interval_s: Number = 0.5
    # steps between loss points in TensorBoard; null: about 50 points a run, at most 50 steps apart
    log_every_steps: Annotated[Int | None, rule(lambda v: v is None or v >= 1, "expected >= 1 or null")] = None
    class_weights: list[Number] | None = None  # one per class
    refit: Flag = Field(False, description="after this run (the selection), train the model again from the same "
                        "start on every labelled point (the validation's and the split's gap too) for the epochs "
                        "the selection kept; that model is the job's (docs/train-job.md 'Refitting')")
    early_stop: EarlyStopSection = Field(default_factory=EarlyStopSection)
    consistency: ConsistencySection = Field(default_factory=ConsistencySection)
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)

    @field_validator("init_from")
    @classmethod
    def _start_for_mode(cls, value: str | None, info: ValidationInfo) -> str | None:
        mode = info.data.get("mode")  # absent when mode itself was refused
        if mode not in (None, "new") and not value:
            raise problem(f"mode {mode!r} needs a checkpoint (.pt) or model file (.h5) to start from")
        return value


class DistillSection(Section):
    """After the job's model (the teacher) has trained on the picks, it predicts the whole training survey; its
    confident voxels, with the training picks written over them, label crops drawn from the whole cube for one
    small network (the student), which becomes the job's model and is applied inline only."""

    enabled: bool = Field(False, description="distil the trained model into a student (unet, data.survey, one rank)")
    min_confidence: float = Field(0.3, ge=0, lt=1, description="voxels whose teacher confidence (top-1 minus "
                                  "top-2 probability) is below this are unlabelled (-1) for the student")
    epochs: int = Field(30, ge=1, description="the student's epochs")
    batches_per_epoch: Annotated[int | None, rule(
        lambda v: v is None or 1 <= v <= MAX_BATCHES_PER_EPOCH,
        f"expected 1..{MAX_BATCHES_PER_EPOCH:,} batches per epoch or null, got {{value}}", minimum=1,
        maximum=MAX_BATCHES_PER_EPOCH)] = Field(None, description="the student's batches per epoch; null: "
                                                 "data.batches_per_epoch")
    max_minutes: float | None = Field(None, gt=0, description="the student's time budget (train.budget_clock); "
                                      "train.max_minutes is the teacher's")
    members: int = Field(1, ge=1, description="the student's members (at most the teacher's)")
    init: Literal["teacher", "new"] = Field("teacher", description="teacher: the student starts from the "
                                            "teacher's first members' weights; new: from fresh weights")


def refit_problems(spec: "TrainSpec") -> list[tuple[tuple[str | int, ...], str]]:
    """Where refitting cannot repeat the selection run (only when train.refit)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    cfg = spec.train
    if spec.distill.enabled:
        out.append((("train", "refit"), "refit and distill.enabled together are not built: choose one"))
    if cfg.distributed.world_size > 1:
        out.append((("train", "refit"), "refitting runs on one rank: set train.distributed.world_size: 1"))
    if spec.schedule.kind == "plateau":
        out.append((("train", "refit"), "schedule.kind plateau lowers the rate on validation figures, which the "
                    "refit run does not have: use cosine, step or constant"))
    if cfg.mode == "resume" and cfg.init_from and not cfg.init_from.endswith((".h5", ".hdf5")):
        out.append((("train", "refit"), "resuming a checkpoint continues a run whose epochs a refit cannot "
                    "repeat: start from a model file (.h5) or a new model"))
    return out


def pretrain_problems(spec: "TrainSpec") -> list[tuple[tuple[str | int, ...], str]]:
    """Where pretraining cannot work (only when train.pretrain.steps > 0)."""
    if not spec.train.pretrain.steps:
        return []
    where, out = ("train", "pretrain", "steps"), []
    if spec.model.name != "unet":
        out.append((where, f"pretraining needs model.name unet, got {spec.model.name!r}: it fills in every voxel of "
                    "a crop with a head in place of the class head"))
    if spec.data.survey is None:
        out.append((where, "pretraining draws crops anywhere in data.survey; example sets (data.examples) are not "
                    "supported"))
    if spec.train.distributed.world_size > 1:
        out.append((where, "pretraining runs on one rank: set train.distributed.world_size: 1"))
    return out


def distill_problems(spec: "TrainSpec") -> list[tuple[tuple[str | int, ...], str]]:
    """Where distilling cannot work, with what to change (only when distill.enabled)."""
    if not spec.distill.enabled:
        return []
    d, out = spec.data, []
    if spec.model.name != "unet":
        out.append((("distill", "enabled"), f"distilling needs model.name unet, got {spec.model.name!r}: the "
                    "teacher predicts the whole survey per voxel and the student is a one-member unet"))
    if d.survey is None:
        out.append((("distill", "enabled"), "distilling needs data.survey (the survey the teacher predicts and "
                    "the student trains on); example sets (data.examples) are not supported"))
    if d.crop.orientation == "time" or d.context:
        out.append((("distill", "enabled"), "distilling needs inline, crossline or 3d crops without context "
                    "sections (data.context: 0; a student with context is not built or tested)"))
    if spec.train.distributed.world_size > 1:
        out.append((("distill", "enabled"), "distilling runs on one rank: set train.distributed.world_size: 1"))
    teacher = int(spec.model.params.get("members", 1))
    if spec.distill.members > teacher:
        out.append((("distill", "members"), f"{spec.distill.members} student members, more than the teacher's "
                    f"{teacher} (model.params.members)"))
    return out


class ApplySection(Section):
    """How predict jobs (and streams, within each block) apply the model file unless they say otherwise: written
    to the model file's input_spec."""

    smooth: Smooth | None = Field(None, description=SMOOTH_HELP)


class TrainSpec(JobSpec):
    # _sections_agree: the smallest crop of each model (a batch that splits over the ranks: submit only)
    model_config = ConfigDict(json_schema_extra={"allOf": crop_json_schema()})

    kind: Literal["train"] = "train"
    output: str = Field(description="model name: the model file is written to models/<output>.h5",
                        json_schema_extra=NAME)
    overwrite: bool = Field(False, description="replace an existing model file of that name")
    data: DataSection
    model: ModelSection
    optim: OptimSection = Field(default_factory=OptimSection, description="docs/training.md")
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    train: TrainSection = Field(default_factory=TrainSection)
    distill: DistillSection = Field(default_factory=DistillSection, description="docs/train-job.md 'distill'")
    apply: ApplySection = Field(default_factory=ApplySection, description="docs/train-job.md 'apply'")

    @model_validator(mode="after")
    def _sections_agree(self) -> "TrainSpec":
        """Rules across sections: the crop suits the model, the batch splits over the ranks, distilling can work."""
        crop, world = list(self.data.crop.size), self.train.distributed.world_size
        problems: list[tuple[tuple[str | int, ...], str]] = [
            (("data", "crop", "size"), p) for p in crop_problems(self.model.name, crop, self.data.crop.orientation)]
        if self.data.batch_size % world:
            problems.append((("data", "batch_size"), f"{self.data.batch_size} does not split evenly over "
                             f"train.distributed.world_size {world} ranks; use a multiple of {world}"))
        problems += distill_problems(self)
        if self.train.consistency.weight and world > 1:
            problems.append((("train", "consistency", "weight"), "the consistency loss is built for one rank: set "
                             "train.distributed.world_size: 1 or weight: 0"))
        if self.data.unlabelled and self.data.from_sets:
            problems.append((("data", "unlabelled"), "crops anywhere in a survey need data.survey (examples made on "
                             "the fly from its picks), not example sets"))
        if self.train.refit:
            problems += refit_problems(self)
        problems += pretrain_problems(self)
        if problems:
            raise problems_error("train", problems)
        return self

    def input_files(self) -> list[tuple[str, str]]:
        """A user model's file and train.init_from (daemon/kinds/job_files.py: relative paths start at the home)."""
        out = self.code_files()
        if self.train.init_from is not None:
            out.append(("train.init_from", self.train.init_from))
        return out

    def code_files(self) -> list[tuple[str, str]]:
        """A user model's file is imported and run."""
        return [("model.params.path", self.model.params["path"])] if self.model.name == "user" else []

    def default_name(self) -> str:
        return self.output
