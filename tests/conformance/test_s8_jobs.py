"""Section 8, "Jobs: files, validation, states", through raw frames: submit names every problem of a job file; the
`schema` operation's JSON Schemas accept every job file under configs/ and every job file the documents show, and
refuse the broken ones (those of the tests and of the documents) at the same key paths as submit; a job that ran
when the daemon was killed is interrupted and queued again by the next daemon."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conformance.wire import ROOT, Conn, Daemon, wait_until

# Broken job files of the tests (and of the documents), each refused by submit for what its keys hold alone.
TRAIN = {"kind": "train", "output": "m", "data": {"survey": "s", "crop": {"size": [8, 8]}},
         "model": {"name": "patchcnn"}}
BROKEN: dict[str, dict[str, Any]] = {
    "test_control_plane: three problems": {"kind": "test.steps", "steps": 0, "step_s": "slow", "stepz": 3},
    "test_cli: three problems": {"kind": "test.steps", "steps": -1, "step_s": "fast", "colour": "red"},
    "test_training: optim, schedule, train": {**TRAIN, "optim": {"name": "rmsprop", "lr": "fast"},
                                              "schedule": {"kind": "cosine"},
                                              "train": {"mode": "resume", "epochs": 1.5}},
    "test_training: min_epochs": {**TRAIN, "train": {"early_stop": {"min_epochs": -1}}},
    "test_training: max_minutes": {**TRAIN, "train": {"max_minutes": 0}},
    "test_data_jobs: a survey name that escapes": {"kind": "import", "survey": "../escape",
                                                   "segy": {"file": "/etc/hostname"}},
    "import: neither segy nor picks": {"kind": "import", "survey": "f3"},
    "import: segy and picks": {"kind": "import", "survey": "f3", "segy": {"file": "/etc/hostname"},
                               "picks": {"files": ["/etc/hostname"]}},
    "import: unknown key in segy": {"kind": "import", "survey": "f3", "segy": {"file": "/x.sgy", "inline": 189}},
    "extract: 3 sizes, inline": {"kind": "extract", "examples": "e", "sources": [{"survey": "s"}],
                                 "crop": {"size": [8, 8, 8]}},
    "extract: a crop of 0": {"kind": "extract", "examples": "e", "sources": [{"survey": "s"}],
                             "crop": {"size": [0, 8]}},
    "train: unknown model and parameter": {**TRAIN, "model": {"name": "resnet"}},
    "train: a parameter out of range": {**TRAIN, "model": {"name": "unet", "params": {"depth": 9, "colour": 1}}},
    "train: a crop too small for patchcnn": {**TRAIN, "data": {"survey": "s", "crop": {"size": [2, 8]}}},
    "train: context with a 3d crop": {**TRAIN, "data": {"survey": "s", "context": 1,
                                                        "crop": {"size": [8, 8, 8], "orientation": "3d"}},
                                      "model": {"name": "unet"}},
    "predict: batch size 0, unknown output": {"kind": "predict", "model": "m", "survey": "s", "output": "o",
                                              "batch_size": 0, "outputs": ["labels", "edges"]},
    "custom: script and notebook": {"kind": "custom", "script": "/x.py", "notebook": "/x.ipynb"},
    "custom: a notebook with args": {"kind": "custom", "notebook": "/x.ipynb", "args": ["-v"]},
    "no kind": {"steps": 3},
    "an unknown kind": {"kind": "no.such.kind"},
}


def documented_jobs() -> list[tuple[str, dict[str, Any], bool]]:
    """(where, job file, whether the document shows it accepted) for every job file in the documents: YAML blocks
    with a `kind`, JSON blocks of job files, `$ cat NAME.yaml` in a transcript, and submit requests (with their
    replies)."""
    out = []
    for path in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        text = path.read_text()
        for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
            where = f"{path.name}:{text[:m.start()].count(chr(10)) + 1}"
            body = m.group(2)
            if m.group(1) in ("yaml", "yml"):
                doc = yaml.safe_load(body)
                if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and "." not in doc.get("kind", "."):
                    out.append((where, doc, True))
            if m.group(1) == "json":  # job files one per line (requests and replies have a "v")
                for line in body.splitlines():
                    doc = _json_or_none(line)
                    if isinstance(doc, dict) and "kind" in doc and "v" not in doc:
                        out.append((where, doc, True))
            for cat in re.finditer(r"^\$ cat (\S+\.ya?ml)\n((?:(?!\$ ).*\n)*)", body, re.M):
                doc = yaml.safe_load(cat.group(2))
                if isinstance(doc, dict) and "kind" in doc:
                    out.append((f"{where} {cat.group(1)}", doc, "bad" not in cat.group(1)))
            lines = [_json_or_none(line) for line in body.splitlines()]
            replies = {r["re"]: r for r in lines if isinstance(r, dict) and "re" in r}
            for req in lines:
                if isinstance(req, dict) and req.get("op") == "submit" and req["id"] in replies:
                    reply = replies[req["id"]]
                    if reply["ok"] or reply["error"]["code"] == "invalid_job":  # not a key's conflict
                        out.append((f"{where} {req['id']}", req["args"]["job"], reply["ok"]))
    return out


def _json_or_none(line: str) -> Any:
    """A line of JSON, or None (a line elided with "..." is not one)."""
    try:
        return json.loads(line)
    except ValueError:
        return None


def config_jobs() -> list[tuple[str, dict[str, Any]]]:
    docs = [(p.name, yaml.safe_load(p.read_text())) for p in sorted((ROOT / "configs").glob("*.yaml"))]
    return [(name, doc) for name, doc in docs if isinstance(doc, dict) and "kind" in doc]


def schema_paths(validator: jsonschema.protocols.Validator, job: Any) -> set[str]:
    """Where the schema finds problems, as submit names them: the key path, with the key itself for a missing or
    an unknown key."""
    out = set()

    def walk(err: jsonschema.ValidationError) -> None:
        if err.context:
            for sub in err.context:
                walk(sub)
            return
        path = [str(p) for p in err.absolute_path]
        if err.validator == "required":
            out.update(".".join(path + [k]) for k in err.validator_value if k not in err.instance)
        elif err.validator == "additionalProperties":
            known = set(err.schema.get("properties", {}))
            out.update(".".join(path + [k]) for k in err.instance if k not in known)
        else:
            out.add(".".join(path) or "(top level)")

    for e in validator.iter_errors(job):
        walk(e)
    return out


def related(a: str, b: str) -> bool:
    """The same place, or one inside the other ("(top level)" holds everything)."""
    pa = [] if a == "(top level)" else a.split(".")
    pb = [] if b == "(top level)" else b.split(".")
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


@pytest.fixture(scope="module")
def c(daemon: Daemon):
    conn = daemon.conn()
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def validator(c: Conn) -> jsonschema.protocols.Validator:
    schema = c.call("schema")["schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schemas_of_each_kind_are_valid_json_schemas(c: Conn) -> None:
    for kind in c.call("schema")["kinds"]:
        jsonschema.Draft202012Validator.check_schema(c.call("schema", {"kind": kind})["schema"])


@pytest.mark.parametrize("name,job", config_jobs(), ids=[n for n, _ in config_jobs()])
def test_every_job_file_of_configs_validates(validator: jsonschema.protocols.Validator, name: str,
                                             job: dict) -> None:
    assert schema_paths(validator, job) == set(), name


def test_every_documented_job_file_validates_or_is_refused_like_submit(c: Conn,
                                                                       validator: jsonschema.protocols.Validator
                                                                       ) -> None:
    docs = documented_jobs()
    kinds = {job.get("kind") for _, job, _ in docs}
    assert {"import", "extract", "train", "predict", "custom", "test.steps"} <= kinds, kinds  # every kind shown
    for where, job, accepted in docs:
        if accepted:
            assert schema_paths(validator, job) == set(), where
        else:
            _same_problems(c, validator, job, where)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_job_files_are_refused_at_the_same_keys_as_submit(c: Conn, validator: jsonschema.protocols.Validator,
                                                                 name: str) -> None:
    _same_problems(c, validator, BROKEN[name], name)


def _same_problems(c: Conn, validator: jsonschema.protocols.Validator, job: dict, where: str) -> None:
    before = c.call("status")["jobs"]
    err = c.error("submit", {"job": job})
    assert err["code"] == "invalid_job", (where, err)
    submit = {p.split(": ", 1)[0] for p in err["details"]["problems"]}
    schema = schema_paths(validator, job)
    assert schema, f"{where}: the schema accepts what submit refuses: {err['details']['problems']}"
    assert all(any(related(p, q) for q in schema) for p in submit), (where, submit, schema)
    assert all(any(related(q, p) for p in submit) for q in schema), (where, submit, schema)
    assert c.call("status")["jobs"] == before  # nothing queued


def test_a_running_job_is_interrupted_by_a_kill9_and_queued_again(tmp_path: Path) -> None:
    with Daemon({"SEISD_HOME": str(tmp_path / "home")}, log=tmp_path / "seisd.out") as d:
        c = d.conn()
        job = c.call("submit", {"job": {"kind": "test.steps", "steps": 300, "step_s": 0.01}})["id"]
        wait_until(lambda: c.call("show", {"id": job})["progress"] > 0, what="the job to count")
        c.close()
        d.kill9()
        d.start()
        c = d.conn()
        try:
            shown = wait_until(lambda: (lambda j: j if j["state"] == "succeeded" else None)(
                c.call("show", {"id": job})), timeout_s=60, what="the requeued job to succeed")
            states = [(h["state"], h["reason"]) for h in shown["history"]]
            assert [s for s, _ in states] == ["queued", "running", "interrupted", "queued", "running", "succeeded"]
            assert states[3][1] == "requeued when the daemon started" and shown["attempts"] == 2
        finally:
            c.close()
