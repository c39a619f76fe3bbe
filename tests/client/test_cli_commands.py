"""seisctl's commands without a daemon: what a job carries (the daemon's defaults are left to the daemon) and the
folder `keys authorize` writes to. The client is a stub; tests/client/test_cli.py runs the real thing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import zmq.auth

import client.cli._common as common
from client.api import DaemonUnavailable
from client.cli import main


class StubClient:
    """Records submitted jobs; `status` answers STATUS, or raises it when it is an exception."""

    jobs: ClassVar[list[dict[str, Any]]] = []
    STATUS: ClassVar[Any] = DaemonUnavailable("unavailable", "no daemon")

    def __init__(self, home: Any = None, timeout: float = 10.0):
        self.home = home

    def submit(self, job: dict[str, Any], priority: int | None = None) -> dict[str, Any]:
        StubClient.jobs.append(job)
        return {"id": len(StubClient.jobs), "state": "queued"}

    def status(self) -> dict[str, Any]:
        if isinstance(StubClient.STATUS, Exception):
            raise StubClient.STATUS
        return StubClient.STATUS


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> type[StubClient]:
    monkeypatch.setattr(common, "Client", StubClient)
    StubClient.jobs = []
    StubClient.STATUS = DaemonUnavailable("unavailable", "no daemon")
    return StubClient


def submitted(stub: type[StubClient], *argv: str) -> dict[str, Any]:
    assert main(["--json", *argv, "--detach"]) == 0
    return stub.jobs[-1]


def test_survey_import_leaves_the_daemons_defaults_out(stub: type[StubClient], tmp_path: Path) -> None:
    job = submitted(stub, "survey", "import", str(tmp_path / "f.sgy"), "--name", "f")
    assert job == {"kind": "import", "survey": "f", "segy": {"file": str(tmp_path / "f.sgy")}}
    job = submitted(stub, "survey", "import", "f.sgy", "--name", "f", "--iline", "9", "--xline", "21",
                    "--volume", "v", "--add", "--endian", "big", "--sample-unit", "m", "--offset", "3")
    assert job["segy"] == {"file": str(Path("f.sgy").resolve()), "volume": "v", "add_volume": True, "iline": 9,
                           "xline": 21, "endian": "big", "sample_unit": "m", "offset": 3}


def test_job_commands_send_only_what_was_given(stub: type[StubClient]) -> None:
    """The daemon fills in the rest (tests/client/test_cli.py checks what it fills in, through a real daemon)."""
    assert submitted(stub, "picks", "import", "f", "a.pts") == {
        "kind": "import", "survey": "f", "picks": {"files": [str(Path("a.pts").resolve())]}}
    assert submitted(stub, "examples", "extract", "e", "--survey", "f", "--size", "5", "5") == {
        "kind": "extract", "examples": "e", "sources": [{"survey": "f"}], "crop": {"size": [5, 5]}}
    assert submitted(stub, "predict", "m", "f") == {"kind": "predict", "model": "m", "survey": "f", "output": "m"}


def test_options_given_go_in_the_job(stub: type[StubClient]) -> None:
    job = submitted(stub, "picks", "import", "f", "a.pts", "--set", "x", "--pattern", "p", "--class-column", "2",
                    "--z-unit", "ms", "--drop-outside")
    assert job["picks"] == {"files": [str(Path("a.pts").resolve())], "set": "x", "z_unit": "ms",
                            "drop_outside": True, "class_column": 2, "class_pattern": "p"}
    job = submitted(stub, "examples", "extract", "e", "--survey", "s", "--survey", "t", "--size", "3", "3", "3",
                    "--picks", "p", "--volume", "a", "--orientation", "3d", "--notes", "n")
    assert job == {"kind": "extract", "examples": "e", "notes": "n", "crop": {"size": [3, 3, 3], "orientation": "3d"},
                   "sources": [{"survey": "s", "picks": "p", "volumes": ["a"]},
                               {"survey": "t", "picks": "p", "volumes": ["a"]}]}
    job = submitted(stub, "predict", "m", "s", "--outputs", "labels", "--format", "both", "--no-figures",
                    "--figure-inline", "3", "--tile", "64,64", "--stride", "2", "--device", "cpu", "--overwrite",
                    "--keep-arrays")
    assert job == {"kind": "predict", "model": "m", "survey": "s", "output": "m", "outputs": ["labels"],
                   "format": "both", "stride": 2, "overwrite": True, "keep_arrays": True, "device": "cpu",
                   "figures": {"enabled": False, "inlines": [3]}, "tile": [64, 64]}


@pytest.fixture
def public_key(tmp_path: Path) -> Path:
    (tmp_path / "mine").mkdir()
    public, _ = zmq.auth.create_certificates(str(tmp_path / "mine"), "alice")
    return Path(public)


def authorize(home: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["--json", "--home", str(home), "keys", "authorize", str(key)]) == 0
    return json.loads(capsys.readouterr().out)


def test_keys_authorize_uses_the_folder_the_daemon_reports(stub: type[StubClient], tmp_path: Path,
                                                           public_key: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere" / "keys"
    stub.STATUS = {"home": str(home), "authorized_keys": str(elsewhere)}
    r = authorize(home, public_key, capsys)
    assert r == {"authorized": str(elsewhere / "alice.key"), "folder": str(elsewhere), "source": "daemon"}
    assert (elsewhere / "alice.key").read_bytes() == public_key.read_bytes()
    assert not (home / "keys" / "authorized").exists()
    stub.STATUS = {"home": str(home), "authorized_keys": "clients"}  # relative: to the daemon's home
    assert authorize(home, public_key, capsys)["folder"] == str(home / "clients")
    assert main(["--home", str(home), "keys", "authorize", str(public_key)]) == 0
    assert f"in {home / 'clients'} (the folder the daemon reports)" in capsys.readouterr().out


def test_keys_authorize_falls_back_to_the_homes_folder(stub: type[StubClient], tmp_path: Path, public_key: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = (tmp_path / "home").resolve()
    r = authorize(home, public_key, capsys)  # no daemon answers
    assert r == {"authorized": str(home / "keys" / "authorized" / "alice.key"),
                 "folder": str(home / "keys" / "authorized"), "source": "default"}
    assert (home / "keys" / "authorized" / "alice.key").is_file()
    stub.STATUS = {"home": str(home)}  # a daemon that does not report its folder
    assert authorize(home, public_key, capsys)["source"] == "default"
    assert main(["--home", str(home), "keys", "authorize", str(public_key)]) == 0
    assert "the daemon reports no folder" in capsys.readouterr().out
