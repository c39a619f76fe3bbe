"""Job kind `custom`: a user's Python script or Jupyter notebook, run like any other job.

    kind: custom
    script: /data/work/make_attribute.py      # or  notebook: /data/work/qc.ipynb
    args: [--window, "32"]                    # script: command-line arguments
    parameters: {survey: f3, window: 32}      # notebook: papermill parameters; script: JSON in $SEISJOB_PARAMETERS
    outputs: [attribute.npy]                  # files the job must leave in its outputs folder (checked at the end)

The runner starts the script (or papermill on the notebook) as a child process of the executor, in its own process
group, with the executor's device in CUDA_VISIBLE_DEVICES: so cancel terminates it (and what it started), and a
crash of user code never takes the executor down. Its stdout and stderr go line by line into the job's log (and as
job.log events). The child finds its folders in the environment: SEISJOB_DIR (the job folder), SEISJOB_OUTPUTS
(`outputs/` inside it, also its working directory), SEISJOB_DEVICE (the torch device to use), SEISJOB_PARAMETERS;
it may report progress by writing {"fraction": 0.5, "message": "..."} to $SEISJOB_PROGRESS (a JSON file).
A notebook is executed with papermill and the executed copy saved as `outputs/<name>.ipynb`.

The script or notebook is a file like any a job names (daemon/kinds/job_files.py): a relative path starts at the
home, a regular file inside paths.inputs when that is set. A custom job runs a program, so clients over tcp may
submit one only where the setting tcp.allow_code is true.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from daemon.kinds.registry import CheckContext, JobKind, JobSpec, register



class CustomSpec(JobSpec):
    model_config = ConfigDict(json_schema_extra={  # _one_source
        "oneOf": [{"required": ["script"], "properties": {"script": {"type": "string"}}},
                  {"required": ["notebook"], "properties": {"notebook": {"type": "string"}}}],
        "if": {"required": ["notebook"], "properties": {"notebook": {"type": "string"}}},
        "then": {"properties": {"args": {"maxItems": 0}}}})

    kind: Literal["custom"] = "custom"
    script: str | None = Field(None, description="a Python script to run")
    notebook: str | None = Field(None, description="a Jupyter notebook (.ipynb) to execute with papermill")
    args: list[str] = Field(default_factory=list, description="command-line arguments of the script")
    parameters: dict[str, Any] = Field(default_factory=dict, description="notebook parameters (papermill); for a "
                                       "script, JSON in $SEISJOB_PARAMETERS")
    outputs: list[str] = Field(default_factory=list, description="files the job must leave in outputs/")
    kernel: str = Field("python3", description="the notebook's Jupyter kernel")

    @model_validator(mode="after")
    def _one_source(self) -> "CustomSpec":
        if (self.script is None) == (self.notebook is None):
            raise ValueError("give exactly one of `script:` (a Python file) or `notebook:` (a .ipynb file)")
        if self.notebook is not None and self.args:
            raise ValueError("args: only a script takes command-line arguments; give a notebook `parameters:`")
        return self

    def input_files(self) -> list[tuple[str, str]]:
        """The script or notebook: a relative path starts at the home (daemon/kinds/job_files.py)."""
        return [("script", self.script)] if self.script else [("notebook", self.notebook or "")]

    def code_files(self) -> list[tuple[str, str]]:
        return self.input_files()

    def default_name(self) -> str:
        return Path(self.script or self.notebook or "").name


def check_custom(spec: CustomSpec, ctx: CheckContext) -> list[str]:
    """What the schema and the file rules (daemon/kinds/job_files.py) leave: a notebook's suffix and papermill,
    outputs inside the outputs folder."""
    problems = []
    if spec.notebook is not None:
        if not spec.notebook.endswith(".ipynb"):
            problems.append(f"notebook: {spec.notebook} is not a .ipynb file")
        if importlib.util.find_spec("papermill") is None:
            problems.append("notebook: papermill is not installed in the daemon's environment "
                            "(pip install papermill ipykernel)")
    for out in spec.outputs:
        if Path(out).is_absolute() or ".." in Path(out).parts:
            problems.append(f"outputs: {out!r} must be a path inside the job's outputs folder (no '..')")
    return problems


register(JobKind(name="custom", spec=CustomSpec, runner="daemon.executor.runners.custom:run", check=check_custom,
                 doc="a user's Python script or Jupyter notebook (papermill), with its log, outputs and cancel"))
