"""Daemon settings: configs/daemon.yaml equals the schema's defaults, the sources override in order, and bad settings
stop `seisd --check` with exit 2 naming the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.common.settings import Settings, SettingsError, defaults_yaml, load_settings
from tests.harness import ROOT, daemon_env

CONFIG = ROOT / "configs" / "daemon.yaml"


def seisd(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.server.main", "--home", str(home), *args], cwd=ROOT,
                          env=daemon_env(home, env), capture_output=True, text=True, timeout=60)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """configs/daemon.yaml, or a copy made the way it is made (`seisd --print-defaults`) while it is absent."""
    if CONFIG.is_file():
        return CONFIG
    r = subprocess.run([sys.executable, "-m", "daemon.server.main", "--print-defaults"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=True)
    path = tmp_path / "daemon.yaml"
    path.write_text(r.stdout)
    return path


def test_config_file_equals_schema_defaults(config_file: Path) -> None:
    assert yaml.safe_load(config_file.read_text()) == Settings().model_dump(mode="json")


def test_printed_defaults_are_the_schema_and_documented() -> None:
    text = defaults_yaml()
    assert yaml.safe_load(text) == Settings().model_dump(mode="json")
    assert "# how long a cancelled job may take to stop" in text


def test_empty_home_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}) == Settings()


def test_sources_override_in_order(tmp_path: Path) -> None:
    (tmp_path / "daemon.yaml").write_text("log_level: warning\nexecutor:\n  cancel_grace_s: 3\n  heartbeat_s: 2\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("executor:\n  cancel_grace_s: 4\nlimits:\n  max_frames: 9\n")
    s = load_settings(tmp_path, extra, environ={"SEISD_EXECUTOR__CANCEL_GRACE_S": "5", "SEISD_HOME": "/elsewhere"})
    assert s.log_level == "warning"                   # home file
    assert s.executor.heartbeat_s == 2                # home file, kept beside overrides of its section
    assert s.limits.max_frames == 9                   # --config file
    assert s.executor.cancel_grace_s == 5             # environment wins
    assert s.limits.max_header_bytes == Settings().limits.max_header_bytes


def test_env_values_are_yaml(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={"SEISD_PLUGINS": "[tests.daemon.testkinds, x.y]", "SEISD_DEVICES": "cpu",
                                         "SEISD_TCP__ENDPOINT": "tcp://127.0.0.1:5760",
                                         "SEISD_CLIENT_KEY": "/not/a/setting", "SEISD_SHM_DIR": "/dev/shm"})
    assert s.plugins == ["tests.daemon.testkinds", "x.y"]
    assert s.devices == "cpu" and s.tcp.endpoint == "tcp://127.0.0.1:5760"


@pytest.mark.parametrize("environ,key", [
    ({"SEISD_EXECUTOR__CANCEL_GRACE_S": "-1"}, "executor.cancel_grace_s"),
    ({"SEISD_LIMITS__MAX_FRAMES": "many"}, "limits.max_frames"),
    ({"SEISD_EXECUTOR__CANCEL_GRAZE_S": "1"}, "executor.cancel_graze_s"),
    ({"SEISD_LOG_LEVEL": "chatty"}, "log_level"),
])
def test_bad_setting_names_the_key(tmp_path: Path, environ: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path, environ=environ)
    assert key in str(err.value)


def test_seisd_check_exits_2_naming_the_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ok = seisd(home, "--check")
    assert ok.returncode == 0 and "settings OK" in ok.stdout
    bad = seisd(home, "--check", env={"SEISD_EXECUTOR__HEARTBEAT_S": "0"})
    assert bad.returncode == 2 and "executor.heartbeat_s" in bad.stderr
    (home / "daemon.yaml").write_text("limits:\n  max_fames: 3\n")
    bad = seisd(home, "--check")
    assert bad.returncode == 2 and "limits.max_fames" in bad.stderr


def test_help_names_the_default_home_as_it_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`seisd --help` states the home rule of client.endpoints.default_home, each source in the order it applies."""
    from client.endpoints import default_home

    r = subprocess.run([sys.executable, "-m", "daemon.server.main", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=daemon_env(tmp_path, {"COLUMNS": "80"}))
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # argparse wraps to the terminal's width
    assert "(default: $SEISD_HOME, else $XDG_DATA_HOME/seisd, else ~/.local/share/seisd)" in text
    user = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setenv("SEISD_HOME", str(tmp_path / "seisd-home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == (tmp_path / "seisd-home").resolve()
    monkeypatch.delenv("SEISD_HOME")
    assert default_home() == (tmp_path / "data" / "seisd").resolve()
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_home() == (user / ".local" / "share" / "seisd").resolve()


def test_unreadable_settings_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "daemon.yaml").write_text("executor: [unclosed\n")
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path, environ={})
    assert "daemon.yaml" in str(err.value)
    (tmp_path / "daemon.yaml").write_text("- a list\n")
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path, environ={})
    assert "mapping" in str(err.value)


def test_executor_threads_set_the_executors_omp_num_threads(tmp_path: Path) -> None:
    """`executor.threads` is what the local executor computes with (its OMP_NUM_THREADS, which torch and
    daemon.common.devices.cpu_threads follow), over the daemon's own environment; unset, the executor inherits the
    daemon's variable. `status` and `seisctl daemon status` show the number the executor said it computes with."""
    import psutil

    from tests.harness import RunningDaemon, seisctl

    for name, env, threads in [("a", {"OMP_NUM_THREADS": "3", "SEISD_EXECUTOR__THREADS": "2"}, 2),
                               ("b", {"OMP_NUM_THREADS": "3"}, 3)]:
        with RunningDaemon(tmp_path / name, env=env) as d:
            slot = d.client.status()["devices"][0]   # start() returned once the executor said hello
            assert psutil.Process(slot["executor_pid"]).environ()["OMP_NUM_THREADS"] == str(threads)
            assert slot["threads"] == threads, slot
            shown = seisctl(d.home, "daemon", "status")
            assert shown.returncode == 0, shown.stderr
            out = shown.stdout
            header, row = [line.split() for line in out.splitlines() if line.startswith(("SLOT", "cpu"))]
            assert row[header.index("THREADS")] == str(threads), out
    with pytest.raises(SettingsError, match="executor.threads"):
        load_settings(tmp_path, environ={"SEISD_EXECUTOR__THREADS": "0"})


@pytest.mark.parametrize("value, threads", [("6", 6), ("4,2", 4), (" 3 ", 3), ("0", None), ("many", None), ("", None)])
def test_cpu_threads_reads_omp_num_threads(monkeypatch: pytest.MonkeyPatch, value: str, threads: int | None) -> None:
    import os

    from daemon.common.devices import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert cpu_threads() == (threads or os.cpu_count() or 1)
