"""The one place job kinds register.

A kind is a torch-free pydantic spec (validated in the daemon's main process at submit) plus the dotted path of the
function that runs it (imported only inside an executor), its checks, and hooks that the main side calls where a
kind's jobs are placed differently (the GPU slots a job takes, what its executor asks a cluster for). Built-in kinds
register in `daemon/kinds/__init__.py`; settings.plugins names extra modules to import, each calling `register()`
(tests use this for test-only kinds).
"""
from __future__ import annotations

import difflib
from types import UnionType

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.kinds.job_files import code_problems, place_problems, read_problems
from daemon.kinds.schema import PROBLEM


class JobSpec(BaseModel):
    """Keys every job file may have. A kind's spec subclasses this and adds its own sections."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str | None = Field(None, max_length=200, description="a label for listings")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first; equal priorities run in order")
    device: str = Field("auto", description="auto (a free GPU, else the CPU), cpu, cuda, or cuda:N")
    time_limit_s: float | None = Field(None, gt=0, description="the most seconds the job may run, over all its "
                                       "attempts; past it the job is stopped and fails (cause time_limit)")

    def input_files(self) -> list[tuple[str, str]]:
        """(key path, file) of every file this job names for reading: each is resolved and checked at submit by
        daemon/kinds/job_files.py (inside the home or paths.inputs, a regular file)."""
        return []

    def output_files(self) -> list[tuple[str, str]]:
        """(key path, file) of every file outside the home this job writes: placed by the same rule as input_files
        (inside paths.inputs or the home when that is set), but need not exist yet."""
        return []

    def code_files(self) -> list[tuple[str, str]]:
        """(key path, file) of the files among input_files that this job runs as code (a script, a user model):
        refused from tcp clients unless the setting tcp.allow_code is true."""
        return []

    def default_name(self) -> str | None:
        """The name the job is listed under when its file gives no `name`: what it makes or runs (a kind's spec
        says which); None: no name."""
        return None

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("expected auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class CheckContext:
    """What a submit-time check may look at: the daemon's home (surveys/, models/ ...), read-only; the folders job
    files may read from (paths.inputs resolved, with the home; empty: no restriction for local clients); who asks
    (`remote`: a client over tcp) and what such a client may ask for (settings tcp.allow_code, and
    workers.default_count for a train job that names no worker count)."""

    home: Path
    input_roots: tuple[Path, ...] = ()
    remote: bool = False
    allow_remote_code: bool = False
    default_workers: int = 2


@dataclass(frozen=True)
class TaskResources:
    """What an executor's task asks a cluster (Ray) for."""

    cpus: float
    gpus: float


@dataclass(frozen=True)
class JobKind:
    name: str
    spec: type[JobSpec]
    runner: str                                   # "module:function", called as function(spec, ctx) -> dict
    resumable: bool = False                       # True: an interrupted job continues from its checkpoint
    idempotent: bool = False                      # True: running it again from the start is safe (its output is
    #                                               written whole at its end), so a lost executor's job is retried
    devices: Literal["any", "cpu"] = "any"        # "cpu": never occupies a GPU slot (e.g. SEG-Y import)
    check: Callable[[Any, CheckContext], list[str]] | None = None  # semantic problems (missing files ...)
    # checks that take seconds (building a user model in a child process): run off the daemon's loop, after
    # `check` passed; the submit is answered when they finish
    slow_check: Callable[[Any, CheckContext], list[str]] | None = None
    # hook: the GPU slots a job wants at once, from its spec (a data-parallel train job: one per rank); None: 1.
    # Whether it gets them is the scheduler's rule (daemon/server/scheduler.py, slots_wanted).
    slots: Callable[[Any], int] | None = None
    # hook: what the job's own executor task asks a cluster for, from its spec and what a job gets by default
    # (settings ray.num_cpus_per_job, and ray.num_gpus_per_job for a CUDA job); None: the default
    resources: Callable[[Any, TaskResources], TaskResources] | None = None
    # hook: what the job writes in the home, as names such as "surveys/f3" or "models/facies", from its spec; two
    # jobs that write one of the same never run at once, the later waits (daemon/server/scheduler.py, one_writer)
    writes: Callable[[Any], tuple[str, ...]] | None = None
    doc: str = ""

    def load_runner(self) -> Callable[..., Any]:
        module, _, func = self.runner.partition(":")
        return getattr(importlib.import_module(module), func)

    def load_spec(self, stored: Mapping[str, Any]) -> JobSpec:
        """A spec as the queue stores it (validated at submit, defaults filled in) read back into its typed form."""
        return self.spec.model_validate(stored)

    def slots_needed(self, spec: JobSpec | Mapping[str, Any]) -> int:
        """The `slots` hook, for a typed spec or a stored one. A stored spec that no longer reads (a job queued by
        an older seisd) wants 1 slot: its executor reads it again and fails the job with the reason."""
        typed = self._typed(spec) if self.slots else None
        return max(1, int(self.slots(typed))) if typed is not None else 1

    def task_resources(self, spec: JobSpec | Mapping[str, Any], default: TaskResources) -> TaskResources:
        """The `resources` hook, for a typed spec or a stored one; `default` without a hook or a readable spec."""
        typed = self._typed(spec) if self.resources else None
        return self.resources(typed, default) if typed is not None else default

    def writes_to(self, spec: JobSpec | Mapping[str, Any]) -> tuple[str, ...]:
        """The `writes` hook, for a typed spec or a stored one; () without a hook or a readable spec."""
        typed = self._typed(spec) if self.writes else None
        return tuple(self.writes(typed)) if typed is not None else ()

    def _typed(self, spec: JobSpec | Mapping[str, Any]) -> JobSpec | None:
        if isinstance(spec, JobSpec):
            return spec
        try:
            return self.load_spec(spec)
        except ValidationError:
            return None


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> None:
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"job kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind


def get_kind(name: str) -> JobKind | None:
    return _KINDS.get(name)


def kind_names() -> list[str]:
    return sorted(_KINDS)


def load_plugins(modules: list[str]) -> None:
    """Import plugin modules; each registers its kinds when imported."""
    for m in modules:
        importlib.import_module(m)


class InvalidJob(ValueError):
    """A job file that failed validation; `problems` lists every one as 'key.path: what was expected'."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid job: " + "; ".join(problems))
        self.problems = problems


def validate_job(raw: Any, ctx: CheckContext) -> tuple[JobKind, JobSpec]:
    """Validate a whole job file; raise InvalidJob listing every problem, or return the kind and the typed spec."""
    if not isinstance(raw, dict):
        raise InvalidJob([f"(top level): expected a mapping of keys, got {type(raw).__name__}"])
    kind_name = raw.get("kind")
    if not isinstance(kind_name, str):
        raise InvalidJob([f"kind: required, one of {', '.join(kind_names())}"])
    kind = get_kind(kind_name)
    if kind is None:
        raise InvalidJob([f"kind: unknown job kind {kind_name!r}; known kinds: {', '.join(kind_names())}"])
    spec = parse_spec(kind.spec, raw)
    # code from a tcp client, then files this client may not name: nothing else is looked at for them (so a
    # refusal says nothing of whether such a file exists)
    problems = code_problems(spec, ctx) or place_problems(spec, ctx)
    if problems:
        raise InvalidJob(problems)
    problems = read_problems(spec, ctx) + (kind.check(spec, ctx) if kind.check else [])
    if problems:
        raise InvalidJob(problems)
    return kind, spec


def parse_spec(spec: type[JobSpec], raw: Any) -> JobSpec:
    """`raw` read with a kind's schema; raise InvalidJob naming every problem the schema finds ('key.path: ...')."""
    try:
        return spec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidJob([_problem(e, spec) for e in exc.errors()]) from None


def _section_at(model: Any, loc: tuple) -> Any:
    """The pydantic model class that reads the mapping at `loc` (list indices and dict keys stepped through)."""
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            if field is None:
                return None
            model = field.annotation
        elif isinstance(part, int) or get_origin(model) in (list, dict, tuple):
            model = next((a for a in get_args(model) if a is not type(None)), None) if get_origin(model) is not dict \
                else get_args(model)[-1]
        else:
            return None
        while get_origin(model) in (Union, UnionType):  # X | None: the model among the choices
            model = next((a for a in get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def unknown_key_message(key: str, accepted: list[str]) -> str:
    """'unknown key', with the closest accepted key and the list of accepted ones."""
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}accepted here: {', '.join(accepted)})"


def _problem(e: dict[str, Any], spec: type[JobSpec] | None = None) -> str:
    path = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"]
    if e["type"] == PROBLEM:  # our own message (daemon/kinds/schema.py): it names the value itself
        return f"{path}: {msg}"
    if e["type"] == "extra_forbidden":
        section = _section_at(spec, tuple(e["loc"][:-1])) if spec is not None else None
        msg = (unknown_key_message(str(e["loc"][-1]), sorted(section.model_fields)) if section is not None
               else "unknown key (a typo?)")
    elif "input" in e and e["type"] != "missing":
        shown = repr(e["input"])
        msg += f" (got {shown if len(shown) < 60 else shown[:57] + '...'})"
    return f"{path}: {msg}"
