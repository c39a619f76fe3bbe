"""Job files under a property-based fuzzer: for every registered kind (import, extract, train, predict, test.steps),
a valid-looking job file mutated at random paths (keys removed, values of random types, unknown keys, hostile
names and paths), and wholly random structures. Each submit is answered with `invalid_job` listing problems as
"key.path: ..." or is queued (then cancelled); never `internal`; the daemon stays up and nothing it stored changes.
Also YAML job files through the real seisctl: broken YAML gets a clear message and no traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from client import protocol as P
from client.api import SeisdError
from tests.harness import RunningDaemon, daemon_env, wait_state
from tests.reliability.conftest import LONG
from tests.reliability.fuzzing import json_values
from tests.reliability.homecheck import HomeSnapshot, assert_alive

EXAMPLES = 2_000 if LONG else 300
HOSTILE = ["../x", "a/b", "/etc/passwd", "..", ".hidden", "", "x" * 300, "f3/../../..", "\0", "ñ"]


def base_jobs(inputs: Path) -> list[dict[str, Any]]:
    """One plausible job file per kind, naming the stocked home's survey, picks, examples and model."""
    return [
        {"kind": "import", "survey": "new1", "segy": {"file": str(inputs / "f3.sgy"), "iline": 189, "xline": 193,
                                                      "endian": "auto"}},
        {"kind": "import", "survey": "f3", "picks": {"files": [str(inputs / "multi_sand_ilxl.pts")],
                                                     "set": "p2", "z_unit": "ms"}},
        {"kind": "extract", "examples": "ex2", "sources": [{"survey": "f3", "picks": "two",
                                                            "volumes": ["seismic"]}],
         "crop": {"size": [8, 8], "orientation": "inline"}},
        {"kind": "train", "output": "m2", "data": {"survey": "f3", "picks": "two", "crop": {"size": [8, 8]},
                                                   "batch_size": 4, "batches_per_epoch": 2},
         "model": {"name": "patchcnn", "params": {}}, "optim": {"name": "adam", "lr": 0.001},
         "schedule": {"kind": "constant"}, "train": {"epochs": 1, "init_from": "models/m1.h5"}},
        {"kind": "predict", "model": "m1", "survey": "f3", "output": "p1", "format": "hdf5",
         "figures": {"inlines": [120]}},
        {"kind": "suggest", "model": "m1", "survey": "f3", "lines": 3, "kinds": ["inline"], "region": 0.5},
        {"kind": "test.steps", "steps": 2, "step_s": 0.0},
    ]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a nested job file (dict keys and list indices)."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(job: Any, path: tuple, how: int, value: Any) -> Any:
    if not path:
        return value if how == 1 else job
    head, rest = path[0], path[1:]
    node = json.loads(json.dumps(job))  # deep copy
    if not rest:
        if how == 0 and isinstance(node, dict):
            node.pop(head, None)                      # a key removed
        elif how == 2 and isinstance(node, dict):
            node[f"{head}_x"] = value                 # an unknown key beside it
        else:
            node[head] = value                        # a value of any type, or a hostile string
        return node
    node[head] = _mutate(node[head], rest, how, value)
    return node


@st.composite
def job_files(draw: st.DrawFn, bases: list[dict[str, Any]]) -> Any:
    job = draw(st.sampled_from(bases))
    if draw(st.integers(0, 9)) == 0:   # a wholly random structure under a real kind
        return {"kind": job["kind"], **draw(st.dictionaries(st.sampled_from(sorted(job)) | st.text(max_size=6),
                                                            json_values, max_size=6))}
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(job)))
        value = draw(json_values | st.sampled_from(HOSTILE))
        job = _mutate(job, path, draw(st.integers(0, 3)), value)
    return job


def _submit_raw(sock: zmq.Socket, job: Any) -> dict[str, Any]:
    """Submit with NaN and Infinity allowed in the JSON, as a careless client may send them."""
    sock.send(json.dumps({"v": 1, "id": "j", "op": "submit", "args": {"job": job}}, allow_nan=True).encode())
    assert sock.poll(30_000), f"no reply to submit {job!r}"
    return json.loads(sock.recv_multipart()[-1])


def test_fuzzed_job_files_are_refused_with_every_problem_named(stocked_daemon: RunningDaemon) -> None:
    d = stocked_daemon
    before = HomeSnapshot(d.home)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(P.control_endpoint(d.home))
    accepted: list[int] = []
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(job=job_files(base_jobs(d.inputs)))  # type: ignore[attr-defined]
    def case(job: Any) -> None:
        reply = _submit_raw(sock, job)
        code = "ok" if reply["ok"] else reply["error"]["code"]
        seen[code] = seen.get(code, 0) + 1
        if reply["ok"]:
            accepted.append(reply["result"]["id"])
            try:
                d.client.cancel(reply["result"]["id"])
            except SeisdError as exc:  # a short job may have ended already: nothing left to cancel
                assert exc.code == P.ErrorCode.CONFLICT and "only queued or running" in str(exc), exc
            show = d.client.show(reply["result"]["id"])   # the stored job file must read back
            assert show["kind"] == job["kind"]
            return
        assert code in (P.ErrorCode.INVALID_JOB, P.ErrorCode.BAD_ARGS), reply["error"]
        problems = reply["error"]["details"].get("problems")
        assert problems and all(isinstance(p, str) and ": " in p for p in problems), reply["error"]

    try:
        case()
    finally:
        sock.close(0)
        assert_alive(d, "fuzzed job files")
    print("job-file fuzz:", json.dumps(seen))
    assert seen.get(P.ErrorCode.INVALID_JOB, 0) > EXAMPLES // 2
    for job_id in accepted:
        wait_state(d.client, job_id, timeout=60)
    assert before.changes() == []


@pytest.mark.parametrize("text,expect", [
    ("kind: test.steps\nsteps: [1, 2\n", "not valid YAML"),
    ("- kind: test.steps\n", "must hold a mapping"),
    ("", "must hold a mapping"),
    ("kind: test.steps\n\tsteps: 2\n", "not valid YAML"),
    ("kind: test.steps\nname: 2024-01-01\n", "name"),
    ("kind: test.steps\nsteps: .nan\n", "steps"),
    ("kind: test.steps\nsteps: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_broken_yaml_job_files_get_a_clear_message(module_daemon_for_yaml: RunningDaemon, tmp_path: Path,
                                                   text: str, expect: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(text)
    p = subprocess.run([sys.executable, "-m", "client.cli", "submit", str(job), "--detach"], capture_output=True,
                       text=True, env=daemon_env(module_daemon_for_yaml.home), timeout=60)
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    assert expect in p.stderr + p.stdout, p.stderr + p.stdout
    assert_alive(module_daemon_for_yaml)


@pytest.fixture(scope="module")
def module_daemon_for_yaml(tmp_path_factory: pytest.TempPathFactory):
    with RunningDaemon(tmp_path_factory.mktemp("yaml") / "home") as d:
        yield d


LAUGHS = "kind: test.steps\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("content, expect", [
    (LAUGHS.encode(), "values through YAML aliases"),           # a billion laughs: refused before expansion
    (b"kind: test.steps\nsteps: &s [1, *s]\n", "contains itself"),
    (bytes(range(256)) * 8, "is not a text file"),
    (b"kind: test.steps\x00\n", "NUL bytes"),
    (b"kind: test.steps\n" + b"# padding\n" * 120_000, "larger than 1 MiB"),
])
def test_hostile_job_files_are_refused_by_seisctl_at_once(module_daemon_for_yaml: RunningDaemon, tmp_path: Path,
                                                          content: bytes, expect: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes(content)
    before = len(module_daemon_for_yaml.client.jobs())
    p = subprocess.run([sys.executable, "-m", "client.cli", "submit", str(job), "--detach"], capture_output=True,
                       text=True, env=daemon_env(module_daemon_for_yaml.home), timeout=30)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and expect in p.stderr and str(job) in p.stderr, p.stderr
    assert len(module_daemon_for_yaml.client.jobs()) == before


def test_a_daemon_that_cannot_start_is_named_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("workers:\n  default_count: many\n")
    p = subprocess.run([sys.executable, "-m", "client.cli", "--home", str(tmp_path / "home"), "daemon", "start",
                        "--config", str(config)], capture_output=True, text=True, timeout=60,
                       env=daemon_env(tmp_path / "home"))
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert "exited with status" in p.stderr and "default_count" in p.stderr, p.stderr
