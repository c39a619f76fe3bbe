"""seisctl as a person at a terminal meets it: the progress bar (on a terminal and on a pipe), its ETA, a closed
pipe (`seisctl ... | head`), "did you mean" for a mistyped command, human output without Python reprs, and shell
completion. The real seisctl against a real daemon; the terminal is a real pseudo-terminal."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.client.test_cli import job_file, seisctl, seisctl_json
from tests.harness import ROOT, RunningDaemon, daemon_env, steps_job, wait_state

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with RunningDaemon(tmp_path_factory.mktemp("cli-terminal") / "home") as d:
        yield d


def on_terminal(home: Path, *args: str, columns: int = 80, timeout: float = 60) -> tuple[int, str]:
    """Run seisctl with a pseudo-terminal of `columns` columns as stdin, stdout and stderr; (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=daemon_env(home),
                         stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([master], [], [], remaining)[0]:
                break  # the deadline passed with nothing to read
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        return p.wait(timeout=10), b"".join(chunks).decode(errors="replace")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def frames(text: str) -> list[str]:
    """What the terminal showed, one entry per redraw of a line (carriage returns and newlines split them), with
    the spaces a redraw pads it with (a line longer than the terminal wraps, and the next redraw garbles it)."""
    return [f for f in (ANSI.sub("", part) for part in re.split(r"[\r\n]", text)) if f.strip()]


def seconds(eta: str) -> int:
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", eta)
    assert m and eta, eta
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def test_the_bar_fits_the_terminal_reaches_100_and_its_eta_is_smoothed(daemon: RunningDaemon,
                                                                       tmp_path: Path) -> None:
    """A 4 s job whose progress reports the ETAs a training job's jumpy sample rates gave a user (2m12s, 57s,
    1m48s, 29m30s) and ends at 48% (as a training job's last report before it saves its model): the bar stays
    within 80 columns, its last state is 100% before "succeeded", and the ETA shown follows the progress actually
    made (never those jumps)."""
    job = steps_job(steps=20, step_s=0.2, etas=[132, 57, 108, 1770], progress_scale=0.48)
    code, text = on_terminal(daemon.home, "submit", job_file(tmp_path, job), columns=80)
    assert code == 0, text
    shown = frames(text)
    assert all(len(f) <= 80 for f in shown), [f for f in shown if len(f) > 80]
    bars = [f for f in shown if re.search(r"\d+(\.\d)?%", f)]
    assert bars, shown
    assert re.search(r"\b100(\.0)?%", bars[-1]), bars[-4:]
    assert "succeeded" in shown[-1], shown[-3:]
    etas = [seconds(m) for f in bars for m in re.findall(r"ETA (\S+)", f)]
    assert etas, bars
    assert max(etas) <= 15, etas  # the job takes 4 s; the reported 29m30s is never shown
    rises = [(a, b) for a, b in zip(etas, etas[1:]) if b > a + 2]
    assert not rises, etas


def test_on_a_pipe_the_progress_is_lines_ending_at_100(daemon: RunningDaemon, tmp_path: Path) -> None:
    r = seisctl(daemon.home, "submit", job_file(tmp_path, steps_job(steps=20, step_s=0.05, progress_scale=0.5)))
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "%" in ln]
    assert 1 <= len(lines) <= 12, r.stderr
    assert re.search(r"\b100(\.0)?%", lines[-1]), r.stderr
    assert "succeeded" in r.stdout


def test_a_closed_pipe_ends_every_command_quietly(daemon: RunningDaemon, tmp_path: Path) -> None:
    """`seisctl ... | head` when head has gone: no BrokenPipeError traceback, exit 0 or 141, whatever the
    command."""
    job_id = seisctl_json(daemon.home, "submit", job_file(tmp_path, steps_job(steps=2)))["id"]
    for args in (["jobs"], ["show", str(job_id)], ["logs", str(job_id)], ["daemon", "status"], ["devices"],
                 ["--json", "jobs"], ["--help"], ["survey", "--help"], ["completion", "bash"],
                 ["watch", str(job_id)]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before seisctl writes a byte
        r = subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=daemon_env(daemon.home),
                           stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
        os.close(write)
        assert r.returncode in (0, 141), (args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, (args, r.stderr)


def test_a_mistyped_command_gets_did_you_mean(daemon: RunningDaemon) -> None:
    for args, wanted in ((["sumbit", "x.yaml"], "'submit'"), (["survey", "lst"], "'list'"),
                         (["predictions", "lsit"], "'list'"), (["jobs", "--state", "runing"], "'running'")):
        r = seisctl(daemon.home, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert f"did you mean {wanted}?" in r.stderr, (args, r.stderr)


def test_human_output_has_no_python_reprs(daemon: RunningDaemon, tmp_path: Path) -> None:
    job_id = seisctl_json(daemon.home, "submit", "--detach", job_file(tmp_path, steps_job(steps=400, step_s=0.05)))[
        "id"]
    wait_state(daemon.client, job_id, "running")
    r = seisctl(daemon.home, "workers", str(job_id), "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"job {job_id}: count: 3", r.stdout
    daemon.client.cancel(job_id)
    wait_state(daemon.client, job_id)


def test_shell_completion_for_bash_and_zsh(daemon: RunningDaemon, tmp_path: Path) -> None:
    """`seisctl completion bash` is a script bash loads, completing commands, subcommands and options;
    `seisctl completion zsh` is a zsh completion function."""
    r = seisctl(daemon.home, "completion", "bash")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "seisctl.bash"
    script.write_text(r.stdout)

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        probe = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
                 f"COMP_LINE={line!r}\nCOMP_POINT={len(line)}\n"
                 "_fn=$(complete -p seisctl | sed -E 's/.*-F ([^ ]+) .*/\\1/')\n"
                 "$_fn seisctl \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n"
                 "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert "survey" in complete("seisctl sur")
    assert {"import", "list", "info", "rm"} <= set(complete("seisctl survey "))
    assert "--kind" in complete("seisctl jobs --k")
    z = seisctl(daemon.home, "completion", "zsh")
    assert z.returncode == 0 and z.stdout.startswith("#compdef seisctl"), z.stdout[:200]
    bad = seisctl(daemon.home, "completion", "fish")
    assert bad.returncode == 2 and "did you mean" not in bad.stderr and "bash" in bad.stderr
