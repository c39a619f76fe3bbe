"""The `opendtect` job kind: an OpendTect example set (training set) read into a seisd example set, or one written.

    kind: opendtect
    action: import | export
    file: /abs/path/set.h5      import: the OpendTect file read; export: the file written
    examples: NAME              import: the seisd set written (examples/NAME.h5); export: the set read
    survey: NAME                import only, optional: also lay the examples out as survey NAME with pick set
                                `examples`, which a train job learns from (workers/example_survey.py)
    overwrite: false            import: replace an unlocked set of that name; export: replace the file
    notes: TEXT                 import: the set's notes

Checked at submit here (torch-free); run in an executor by daemon.executor.runners.opendtect, which calls
workers/odt_examples.py. docs/opendtect.md maps the two layouts.

An export writes a file where the job says, as the daemon's user: it never replaces a file unless `overwrite`, and
when settings paths.inputs lists folders (as it should when clients connect over tcp) only inside them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from daemon.common.home import example_set_file, survey_folder
from daemon.kinds.data import name_problem
from daemon.kinds.registry import CheckContext, JobKind, JobSpec, register


class OpendtectSpec(JobSpec):
    kind: Literal["opendtect"] = "opendtect"
    action: Literal["import", "export"] = Field(description="import an OpendTect example set, or export one")
    file: str = Field(description="the OpendTect example-set file: read by import, written by export")
    examples: str = Field(description="the seisd example set: written by import, read by export")
    survey: str | None = Field(None, description="import: also lay the examples out as this survey (pick set "
                               "`examples`) to train on")
    overwrite: bool = Field(False, description="import: replace an unlocked example set of that name; export: "
                            "replace the file")
    notes: str | None = Field(None, description="import: the example set's notes")

    def input_files(self) -> list[tuple[str, str]]:
        return [("file", self.file)] if self.action == "import" else []

    def output_files(self) -> list[tuple[str, str]]:
        return [("file", self.file)] if self.action == "export" else []


def check_opendtect(spec: OpendtectSpec, ctx: CheckContext) -> list[str]:
    problems = [p for p in (name_problem("examples", spec.examples),
                            spec.survey is not None and name_problem("survey", spec.survey)) if p]
    if problems:
        return problems
    if "\0" in spec.file:
        return ["file: the path holds a NUL character"]
    target, path = example_set_file(ctx.home, spec.examples), Path(spec.file)
    if spec.action == "import":
        if not path.is_file():
            problems.append(f"file: {path} does not exist or is not a file")
        if target.exists() and not spec.overwrite:
            problems.append(f"examples: an example set {spec.examples!r} already exists (set overwrite: true, "
                            f"choose another name, or `seisctl examples rm {spec.examples}`)")
        if spec.survey is not None and survey_folder(ctx.home, spec.survey).exists():
            problems.append(f"survey: a survey {spec.survey!r} already exists (choose another name, or "
                            f"`seisctl survey rm {spec.survey}`)")
        return problems
    if spec.survey is not None:
        problems.append("survey: only an import lays examples out as a survey; leave it out of an export")
    if not target.is_file():
        problems.append(f"examples: no example set {spec.examples!r} in this home (seisctl examples list)")
    if not path.is_absolute():
        problems.append(f"file: {path} is not an absolute path (the daemon writes it; seisctl makes it absolute)")
    elif not path.parent.is_dir():
        problems.append(f"file: the folder {path.parent} does not exist")
    elif path.exists() and not spec.overwrite:
        problems.append(f"file: {path} already exists (set overwrite: true, or choose another file)")
    return problems


def _writes(spec: OpendtectSpec) -> tuple[str, ...]:
    if spec.action == "export":
        return ()  # a file outside the home
    return (f"examples/{spec.examples}", *((f"surveys/{spec.survey}",) if spec.survey else ()))


register(JobKind(name="opendtect", spec=OpendtectSpec, runner="daemon.executor.runners.opendtect:run_opendtect",
                 devices="cpu", check=check_opendtect, writes=_writes,
                 doc="an OpendTect example set into a seisd example set (import), or the reverse (export)"))
