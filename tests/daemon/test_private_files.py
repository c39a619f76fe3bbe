"""The home, its database and logs are the daemon user's alone (umask 077, modes 0700/0600, looser ones tightened
at start with a log line; `home_access: group` for group read), and the runtime folder of the sockets is never
reached through a symbolic link."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from client import protocol as P
from tests.harness import DaemonDidNotStart, RunningDaemon


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The test process (which makes the home and seisd.out, as seisctl does) and the daemon it starts run under
    umask 000: whatever comes out private is the daemon's doing."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def modes(home: Path) -> dict[str, str]:
    paths = [home, home / "seisd.db", home / "logs", home / "logs" / "seisd.log", home / "logs" / "seisd.out"]
    return {str(p.relative_to(home.parent)): oct(mode(p)) for p in paths}


def test_the_home_its_database_and_logs_are_private_under_a_loose_umask(tmp_path: Path, loose_umask: None) -> None:
    home = tmp_path / "home"
    with RunningDaemon(home) as d:
        job = d.client.submit({"kind": "test.steps", "steps": 1})["id"]
        d.client.wait(job, timeout=30)
        assert modes(home) == {"home": "0o700", "home/seisd.db": "0o600", "home/logs": "0o700",
                               "home/logs/seisd.log": "0o600", "home/logs/seisd.out": "0o600"}
        assert mode(home / "jobs" / str(job)) == 0o700  # what executors write: the daemon's umask is theirs
        assert all(mode(p) & 0o077 == 0 for p in (home / "jobs" / str(job)).rglob("*")), \
            {str(p): oct(mode(p)) for p in (home / "jobs" / str(job)).rglob("*")}
        log = (home / "logs" / "seisd.log").read_text()
        # made by the test (as seisctl makes them) under umask 000, tightened by the daemon with a line each
        assert f"tightened {home} from 0o777 to 0o700" in log and "seisd.out from 0o666 to 0o600" in log, log


def test_looser_modes_of_an_existing_home_are_tightened_with_a_log_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with RunningDaemon(home) as d:
        d.stop()
        for p, m in ((home, 0o755), (home / "seisd.db", 0o644), (home / "logs" / "seisd.log", 0o664)):
            os.chmod(p, m)
        d.start()
        assert modes(home)["home"] == "0o700" and modes(home)["home/seisd.db"] == "0o600"
        assert modes(home)["home/logs/seisd.log"] == "0o600"
        log = (home / "logs" / "seisd.log").read_text()
        for line in (f"tightened {home} from 0o755 to 0o700", "seisd.db from 0o644 to 0o600",
                     "seisd.log from 0o664 to 0o600"):
            assert line in log, log


def test_home_access_group_lets_the_group_read(tmp_path: Path, loose_umask: None) -> None:
    home = tmp_path / "home"
    with RunningDaemon(home, env={"SEISD_HOME_ACCESS": "group"}):
        assert modes(home) == {"home": "0o750", "home/seisd.db": "0o640", "home/logs": "0o750",
                               "home/logs/seisd.log": "0o640", "home/logs/seisd.out": "0o640"}


def test_a_symbolic_link_planted_at_the_runtime_path_is_refused(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    rundir = P.runtime_dir(home)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    rundir.symlink_to(elsewhere)
    try:
        with pytest.raises(DaemonDidNotStart) as err:
            with RunningDaemon(home, start_timeout=20):
                pass
        assert f"{rundir} is a symbolic link" in str(err.value) and "remove it" in str(err.value), str(err.value)
        assert list(elsewhere.iterdir()) == [] and mode(elsewhere) == 0o755  # no socket there, its mode untouched
    finally:
        rundir.unlink()


def test_make_private_dir_refuses_links_and_files_and_tightens_a_folder(tmp_path: Path) -> None:
    from daemon.server.daemon import make_private_dir
    from daemon.server.records import DaemonError

    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(DaemonError, match="is a symbolic link"):
        make_private_dir(link)
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(DaemonError, match="is not a folder"):
        make_private_dir(afile)
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    make_private_dir(loose)
    assert mode(loose) == 0o700
    fresh = tmp_path / "fresh"
    make_private_dir(fresh)
    assert fresh.is_dir() and mode(fresh) == 0o700


def test_the_runtime_folder_goes_when_the_daemon_stops_and_when_a_test_kills_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rundir = P.runtime_dir(home.resolve())
    with RunningDaemon(home) as d:
        assert (rundir / "control.sock").exists()
        assert d.stop() == 0
        assert not rundir.exists()  # the daemon's own shutdown (daemon/server/daemon.py)
        d.restart()
        assert (rundir / "control.sock").exists()
    assert not rundir.exists()  # killed by the test's cleanup (tests/procs.py), which removes it
