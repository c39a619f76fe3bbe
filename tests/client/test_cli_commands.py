"""What the real seisctl sends, read back from the daemon's copy of each job (jobs/<id>/job.yaml): options the user
did not give are left out, so the daemon's own defaults apply (they are written once, in daemon/kinds/); and the
folder `keys authorize` writes to."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
import zmq.auth

from client.api import Client
from tests.harness import ROOT, RunningDaemon, free_port, seisctl, seisctl_json

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDaemon, Path]]:
    root = tmp_path_factory.mktemp("cli-commands")
    synth.write(synth.generate(shape=(32, 32, 32), seed=0), root / "synth")
    with RunningDaemon(root / "home") as d:
        yield d, root / "synth"


def sent(d: RunningDaemon, *argv: str) -> dict[str, Any]:
    """Run seisctl to the end (it waits for the job) and return the job as the daemon received it."""
    r = seisctl_json(d.home, *argv)
    job_id = r["id"] if "id" in r else r["job"]["id"]
    return yaml.safe_load((d.home / "jobs" / str(job_id) / "job.yaml").read_text())


def test_commands_send_only_what_the_user_gave(survey: tuple[RunningDaemon, Path]) -> None:
    d, folder = survey
    segy = str((folder / "seismic.sgy").resolve())
    assert sent(d, "survey", "import", segy, "--name", "s") == {"kind": "import", "survey": "s",
                                                                 "segy": {"file": segy}}
    pts = sorted(str(p.resolve()) for p in (folder / "picks").glob("*.pts"))
    job = sent(d, "picks", "import", "s", *pts, "--pattern", r"(?P<name>.+)\.pts")
    assert job == {"kind": "import", "survey": "s", "picks": {"files": pts, "class_pattern": r"(?P<name>.+)\.pts"}}
    job = sent(d, "examples", "extract", "e", "--survey", "s", "--size", "5", "5")
    assert job == {"kind": "extract", "examples": "e", "sources": [{"survey": "s"}], "crop": {"size": [5, 5]}}
    # given options do go in the job
    job = sent(d, "survey", "import", segy, "--name", "t", "--iline", "189", "--xline", "193", "--endian", "big")
    assert job["segy"] == {"file": segy, "iline": 189, "xline": 193, "endian": "big"}


def test_keys_authorize_writes_where_the_daemon_reads(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "clients"
    server = seisctl_json(home, "keys", "create", "server", "--dir", str(home / "keys"))
    mine = seisctl_json(home, "keys", "create", "alice", "--dir", str(tmp_path / "mine"))
    assert Path(server["secret"]).is_file()
    env = {"SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{free_port()}", "SEISD_TCP__AUTHORIZED_KEYS": str(elsewhere)}
    with RunningDaemon(home, env=env) as d:
        r = seisctl_json(home, "keys", "authorize", mine["public"])
        assert r["folder"] == str(elsewhere) and r["source"] == "daemon", r
        assert (elsewhere / "alice.key").is_file() and not (home / "keys" / "authorized" / "alice.key").exists()
        deadline = time.monotonic() + 10  # the daemon looks at the folder every half second
        while d.client.status()["security"]["authorized"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        endpoint = d.client.status()["endpoints"]["tcp_control"]
        with Client(home=home, endpoint=endpoint, timeout=5, server_key=server["public"],
                    client_key=mine["secret"]) as c:
            assert c.ping()  # the key lands where the daemon reads, so it is let in


def test_keys_authorize_without_a_daemon_uses_the_homes_folder(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    (tmp_path / "mine").mkdir()
    public, _ = zmq.auth.create_certificates(str(tmp_path / "mine"), "alice")
    r = seisctl_json(home, "--timeout", "1", "keys", "authorize", public)
    assert r == {"authorized": str(home / "keys" / "authorized" / "alice.key"),
                 "folder": str(home / "keys" / "authorized"), "source": "default"}
    out = seisctl(home, "--timeout", "1", "keys", "authorize", public).stdout
    assert "no daemon answered" in out
