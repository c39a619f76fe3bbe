"""Custom jobs (a user's script or notebook) through a real seisd: outputs, logs, progress, failure, cancel.

The notebook runs with papermill on the venv's `python3` kernel (ipykernel), a real kernel process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.harness import RunningDaemon, pid_alive, wait_for, wait_state

SCRIPT = '''
import json, os, sys
out = os.environ["SEISJOB_OUTPUTS"]
params = json.loads(os.environ["SEISJOB_PARAMETERS"])
print("hello from the script", sys.argv[1:], flush=True)
print("to stderr", file=sys.stderr, flush=True)
with open(os.environ["SEISJOB_PROGRESS"], "w") as f:
    json.dump({"fraction": 0.5, "message": "half"}, f)
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump({"args": sys.argv[1:], "params": params, "cwd": os.getcwd(), "device": os.environ["SEISJOB_DEVICE"],
               "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
'''

SLOW_SCRIPT = '''
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(os.environ["SEISJOB_OUTPUTS"], "pids"), "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
print("sleeping", flush=True)
time.sleep(600)
'''


def notebook(path: Path, body: str) -> Path:
    """A notebook with a `parameters` cell (papermill injects the job's after it) and one code cell."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("scale = 1\nname = 'none'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def run_ok(d: RunningDaemon, job: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    jid = d.client.submit(job)["id"]
    rec = wait_state(d.client, jid, timeout=timeout)
    assert rec["state"] == "succeeded", (rec, d.client.logs(jid)["text"])
    return rec


def test_script_runs_with_args_parameters_and_writes_outputs_and_log(shared_daemon: RunningDaemon,
                                                                     tmp_path: Path) -> None:
    script = tmp_path / "attr.py"
    script.write_text(SCRIPT)
    rec = run_ok(shared_daemon, {"kind": "custom", "script": str(script), "args": ["--window", "32"],
                                 "parameters": {"survey": "f3"}, "outputs": ["result.json"], "device": "cpu"})
    outputs = Path(rec["result"]["outputs"])
    got = json.loads((outputs / "result.json").read_text())
    assert got["args"] == ["--window", "32"] and got["params"] == {"survey": "f3"}
    assert Path(got["cwd"]).resolve() == outputs.resolve() and outputs.parent.name == str(rec["id"])
    assert got["device"] == "cpu" and got["cuda"] == ""  # the CPU slot sees no GPU
    assert rec["result"]["files"] == ["result.json"]
    log = shared_daemon.client.logs(rec["id"])["text"]
    assert "hello from the script ['--window', '32']" in log and "to stderr" in log
    events = shared_daemon.client.job_events(rec["id"])
    fractions = [e["data"]["fraction"] for e in events if e["type"] == "job.progress"]
    assert fractions[-1] == 1.0


def test_notebook_runs_with_papermill_and_is_saved_executed(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    nb = notebook(tmp_path / "qc.ipynb", "import os\nprint('scaled', scale * 21, name)\n"
                  "open(os.path.join(os.environ['SEISJOB_OUTPUTS'], 'out.txt'), 'w').write(str(scale * 21))")
    rec = run_ok(shared_daemon, {"kind": "custom", "notebook": str(nb), "parameters": {"scale": 2, "name": "f3"},
                                 "outputs": ["out.txt"]})
    outputs = Path(rec["result"]["outputs"])
    assert (outputs / "out.txt").read_text() == "42"
    executed = nbformat.read(rec["result"]["notebook"], as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "scaled 42 f3" in printed  # the injected parameters replaced the defaults
    assert "scaled 42 f3" in shared_daemon.client.logs(rec["id"])["text"]


def test_failing_script_fails_the_job_with_its_status_and_last_lines(shared_daemon: RunningDaemon,
                                                                      tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("print('about to fail')\nraise SystemExit(7)\n")
    jid = shared_daemon.client.submit({"kind": "custom", "script": str(script)})["id"]
    rec = wait_state(shared_daemon.client, jid, timeout=60)
    assert rec["state"] == "failed"
    assert "exited with status 7" in rec["error"] and "about to fail" in rec["error"]
    missing = tmp_path / "nothing.py"
    missing.write_text("pass\n")
    rec = wait_state(shared_daemon.client, shared_daemon.client.submit(
        {"kind": "custom", "script": str(missing), "outputs": ["model.h5"]})["id"], timeout=60)
    assert rec["state"] == "failed" and "did not write model.h5" in rec["error"]


def test_bad_custom_job_files_are_refused_naming_the_key(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    from client.api import SeisdError

    script = tmp_path / "s.py"
    script.write_text("pass\n")
    cases = [({"script": str(script), "notebook": str(script)}, "exactly one of"),
             ({"script": str(tmp_path / "absent.py")}, f"script: {tmp_path / 'absent.py'} does not exist"),
             # a relative path starts at the home (daemon/kinds/job_files.py)
             ({"script": "relative.py"}, f"script: relative.py (that is, {shared_daemon.home / 'relative.py'}) does "
                                         "not exist"),
             ({"script": "../relative.py"}, "script: ../relative.py leads outside the home"),
             ({"notebook": str(script)}, "is not a .ipynb file"),
             ({"script": str(script), "outputs": ["../escape"]}, "outputs:")]
    before = len(shared_daemon.client.jobs())
    for job, expected in cases:
        with pytest.raises(SeisdError) as err:
            shared_daemon.client.submit({"kind": "custom", **job})
        assert expected in str(err.value) + json.dumps(err.value.details), (job, err.value)
    assert len(shared_daemon.client.jobs()) == before


def _cancel_running(d: RunningDaemon, jid: int, ready: Any) -> dict[str, Any]:
    wait_for(ready, timeout=60, what=f"job {jid} to be under way")
    assert d.client.cancel(jid)["state"] == "cancelling"
    rec = wait_state(d.client, jid, timeout=30)
    assert rec["state"] == "cancelled", rec
    return rec


def test_cancel_stops_a_script_and_what_it_started(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    jid = shared_daemon.client.submit({"kind": "custom", "script": str(script)})["id"]
    pids_file = shared_daemon.home / "jobs" / str(jid) / "outputs" / "pids"
    _cancel_running(shared_daemon, jid, lambda: pids_file.is_file() and pids_file.read_text())
    pids = [int(p) for p in pids_file.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="the script and its child to end")
    assert "sleeping" in shared_daemon.client.logs(jid)["text"]
    # the executor was not killed: the next job runs on it at once
    assert [d["restarts"] for d in shared_daemon.client.devices()] == [0]


def test_cancel_stops_a_notebook_and_its_kernel(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    nb = notebook(tmp_path / "slow.ipynb", "import os, time\n"
                  "open(os.path.join(os.environ['SEISJOB_OUTPUTS'], 'kernel.pid'), 'w').write(str(os.getpid()))\n"
                  "time.sleep(600)")
    jid = shared_daemon.client.submit({"kind": "custom", "notebook": str(nb)})["id"]
    pid_file = shared_daemon.home / "jobs" / str(jid) / "outputs" / "kernel.pid"
    _cancel_running(shared_daemon, jid, lambda: pid_file.is_file() and pid_file.read_text())
    kernel = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(kernel), timeout=10, what="the notebook's kernel to end")
