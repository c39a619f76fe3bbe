"""seisctl: the command-line client. Every command is a request over the same socket API anyone else uses.

Exit codes (docs/cli.md):
  0  success; for commands that wait for a job: it succeeded
  1  the job failed
  2  bad usage or input refused by the daemon (an invalid job file, a bad argument)
  3  no daemon answered (not running, wrong home, or a tcp key it does not accept)
  4  the job was cancelled
  5  the daemon answered with another error (not found, conflict, internal)
  6  the job was interrupted (the daemon stopped while watching); it resumes at the next start
  130 interrupted by Ctrl-C (the job goes on)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from client import protocol as P
from client.api import Client, DaemonUnavailable, SeisdError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_CANCELLED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 6
OUTCOME_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED,
                "interrupted": EXIT_INTERRUPTED}
COMMANDS: dict[str, Callable[[argparse.Namespace, "Out"], int]] = {}


class Out:
    """Human output on stdout, or exactly one JSON document with --json."""

    def __init__(self, as_json: bool):
        self.json = as_json

    def emit(self, obj: Any, human: Callable[[], None]) -> None:
        if self.json:
            print(json.dumps(obj, indent=None, default=str))
        else:
            human()


def command(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        COMMANDS[name] = fn
        return fn
    return deco


def client_of(a: argparse.Namespace) -> Client:
    return Client(home=a.home, timeout=a.timeout)


# -- daemon ----------------------------------------------------------------------------------------------------


@command("daemon start")
def cmd_daemon_start(a: argparse.Namespace, out: Out) -> int:
    from client.launch import start_daemon
    info = start_daemon(a.home, a.config, a.wait_s)
    out.emit(info, lambda: print(f"seisd {'already running' if info['already_running'] else 'started'}: pid "
                                 f"{info['pid']}, home {info['home']}"))
    return EXIT_OK


@command("daemon stop")
def cmd_daemon_stop(a: argparse.Namespace, out: Out) -> int:
    c = client_of(a)
    try:
        pid = c.status()["pid"]
    except DaemonUnavailable:
        out.emit({"stopped": False, "running": False}, lambda: print("seisd is not running"))
        return EXIT_OK
    c.shutdown()
    deadline = time.monotonic() + a.wait_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    stopped = not _alive(pid)
    out.emit({"stopped": stopped, "pid": pid}, lambda: print(
        f"seisd (pid {pid}) stopped" if stopped else f"seisd (pid {pid}) is still stopping"))
    return EXIT_OK if stopped else EXIT_ERROR


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie waiting for its parent counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


@command("daemon status")
def cmd_daemon_status(a: argparse.Namespace, out: Out) -> int:
    s = client_of(a).status()

    def human() -> None:
        up = time.time() - s["started"]
        print(f"seisd {s['version']} (protocol {s['protocol']}), pid {s['pid']}, up {_duration(up)}")
        print(f"home     {s['home']}")
        print(f"session  {s['session']}")
        print("jobs     " + ", ".join(f"{k} {v}" for k, v in s["jobs"].items()))
        _print_devices(s["devices"])
    out.emit(s, human)
    return EXIT_OK


def _print_devices(devices: list[dict[str, Any]]) -> None:
    _table(["SLOT", "STATE", "JOB", "EXECUTOR", "RESTARTS", "DEVICE"],
           [[d["slot"], d["state"], d["job"] or "-", d["executor_pid"] or "-", d["restarts"], d["description"]]
            for d in devices])


@command("devices")
def cmd_devices(a: argparse.Namespace, out: Out) -> int:
    devices = client_of(a).devices()
    out.emit({"devices": devices}, lambda: _print_devices(devices))
    return EXIT_OK


# -- jobs ------------------------------------------------------------------------------------------------------


@command("submit")
def cmd_submit(a: argparse.Namespace, out: Out) -> int:
    try:
        job = yaml.safe_load(Path(a.file).read_text())
    except OSError as exc:
        print(f"seisctl: cannot read job file {a.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except yaml.YAMLError as exc:
        print(f"seisctl: {a.file} is not valid YAML: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(job, dict):
        print(f"seisctl: {a.file} must hold a mapping of keys (kind: ..., ...)", file=sys.stderr)
        return EXIT_USAGE
    bad = _unsendable(job)
    if bad:
        print(f"seisctl: {a.file}: {bad[0]}: {bad[1]} cannot go in a job file; quote dates and times, and use "
              "finite numbers", file=sys.stderr)
        return EXIT_USAGE
    return submit_and_follow(a, out, job)


def _unsendable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The key path of the first value JSON cannot carry (YAML dates, .nan, .inf), or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = _unsendable(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
        return None
    if isinstance(value, list):
        return next((f for i, v in enumerate(value) if (f := _unsendable(v, f"{path}.{i}"))), None)
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)", repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return path or "(top level)", f"a {type(value).__name__} ({value})"


def submit_and_follow(a: argparse.Namespace, out: Out, job: dict[str, Any]) -> int:
    """Submit; with --detach print the id, else wait with a progress bar and exit with the job's outcome. Every
    command that runs a job goes through here."""
    c = client_of(a)
    r = c.submit(job, priority=getattr(a, "priority", None))
    a.job_id = r["id"]
    if a.detach:
        out.emit(r, lambda: print(r["id"]))
        return EXIT_OK
    if not out.json:
        print(f"job {r['id']} queued ({job.get('kind')})", file=sys.stderr)
    return follow(c, r["id"], out)


def follow(c: Client, job_id: int, out: Out) -> int:
    bar = ProgressBar(enabled=not out.json)
    sub = c.subscribe(P.job_topic(job_id))
    try:
        job = c.show(job_id)
        while job["state"] not in P.TERMINAL_STATES and job["state"] != "interrupted":
            bar.update(job)
            if sub.poll(1000):
                while sub.poll(0):
                    frames = sub.recv_multipart()
                    if frames[0].decode() != P.job_topic(job_id):
                        continue
                    ev = P.Event.decode(frames)
                    if ev.type == P.EventType.JOB_PROGRESS:
                        job = {**job, "progress": ev.data.get("fraction", job["progress"]),
                               "message": ev.data.get("message") or job.get("message"),
                               "eta_s": ev.data.get("eta_s")}
                        bar.update(job)
                    elif ev.type == P.EventType.JOB_LOG and not out.json and bar.verbose:
                        bar.line(f"  {ev.data.get('message')}")
            fresh = c.show(job_id)
            job = {**fresh, "eta_s": job.get("eta_s")} if fresh["state"] == job["state"] else fresh
    except DaemonUnavailable:
        bar.done()
        print(f"seisctl: lost the daemon while watching job {job_id}; it resumes when the daemon starts again",
              file=sys.stderr)
        return EXIT_NO_DAEMON
    finally:
        sub.close(0)
    bar.done()
    out.emit(job, lambda: print(_outcome_line(job)))
    return OUTCOME_EXIT.get(job["state"], EXIT_ERROR)


def _outcome_line(job: dict[str, Any]) -> str:
    took = (job["finished"] or time.time()) - (job["started"] or job["created"])
    line = f"job {job['id']} {job['state']} after {_duration(took)}"
    if job.get("error"):
        line += f": {job['error']}"
    return line


class ProgressBar:
    """One updating line on a terminal; on a pipe, a line every 10% or when the message changes."""

    def __init__(self, enabled: bool, width: int = 30):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.width = width
        self.verbose = False
        self.last_decile = -1
        self.last_msg: str | None = None

    def update(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        frac = float(job.get("progress") or 0.0)
        msg = job.get("message") or job["state"]
        eta = job.get("eta_s")
        eta_s = f" ETA {_duration(eta)}" if eta else ""
        filled = int(frac * self.width)
        text = f"[{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:5.1f}% {msg}{eta_s}"
        if self.tty:
            sys.stderr.write("\r" + text[:120].ljust(120))
            sys.stderr.flush()
        elif int(frac * 10) != self.last_decile or msg != self.last_msg:
            self.last_decile, self.last_msg = int(frac * 10), msg
            print(text, file=sys.stderr)

    def line(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 120 + "\r")
        print(text, file=sys.stderr)

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


@command("watch")
def cmd_watch(a: argparse.Namespace, out: Out) -> int:
    return follow(client_of(a), a.job, out)


@command("jobs")
def cmd_jobs(a: argparse.Namespace, out: Out) -> int:
    rows = client_of(a).jobs(state=a.state, kind=a.kind, limit=a.limit)
    out.emit({"jobs": rows}, lambda: _table(
        ["ID", "KIND", "STATE", "PRIO", "PROGRESS", "SLOT", "NAME", "SUBMITTED", "ERROR"],
        [[r["id"], r["kind"], r["state"], r["priority"], f"{r['progress'] * 100:.0f}%", r["slot"] or "-",
          r["name"] or "-", time.strftime("%m-%d %H:%M:%S", time.localtime(r["created"])),
          (r["error"] or "")[:60]] for r in rows]))
    return EXIT_OK


@command("show")
def cmd_show(a: argparse.Namespace, out: Out) -> int:
    j = client_of(a).show(a.job)

    def human() -> None:
        for key in ("id", "kind", "name", "state", "priority", "device", "slot", "progress", "message", "error",
                    "attempts", "dir"):
            value = j.get(key)
            if key == "progress":
                value = f"{value * 100:.1f}%"
            print(f"{key:10} {value if value is not None else '-'}")
        print("history:")
        for h in j["history"]:
            print(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(h['time']))}  {h['state']:11} "
                  f"{h['reason'] or ''}")
        if j.get("metrics"):
            print("latest metrics:")
            print("  " + yaml.safe_dump(j["metrics"], sort_keys=False, default_flow_style=None
                                        ).replace("\n", "\n  ").rstrip())
        if j.get("result"):
            print("result:")
            print("  " + yaml.safe_dump(j["result"], sort_keys=False).replace("\n", "\n  ").rstrip())
    out.emit(j, human)
    return EXIT_OK


@command("cancel")
def cmd_cancel(a: argparse.Namespace, out: Out) -> int:
    r = client_of(a).cancel(a.job)
    out.emit(r, lambda: print(f"job {a.job}: {r['state']}"))
    return EXIT_OK


@command("logs")
def cmd_logs(a: argparse.Namespace, out: Out) -> int:
    c = client_of(a)
    offset, chunks = 0, []
    while True:
        r = c.logs(a.job, offset=offset)
        if r["text"]:
            if out.json:
                chunks.append(r["text"])
            else:
                sys.stdout.write(r["text"])
                sys.stdout.flush()
        offset = r["offset"]
        if r["offset"] < r["size"]:
            continue  # more to read now
        if not a.follow or r["state"] in P.TERMINAL_STATES:
            break
        time.sleep(0.5)
    out.emit({"id": a.job, "text": "".join(chunks), "offset": offset}, lambda: None)
    return EXIT_OK


@command("workers")
def cmd_workers(a: argparse.Namespace, out: Out) -> int:
    r = client_of(a).workers(a.job, a.count)
    out.emit(r, lambda: print(f"job {a.job}: {r}"))
    return EXIT_OK


# -- surveys, picks, example sets ------------------------------------------------------------------------------


@command("survey import")
def cmd_survey_import(a: argparse.Namespace, out: Out) -> int:
    segy = {"file": str(Path(a.file).resolve()), "volume": a.volume, "add_volume": a.add, "iline": a.iline,
            "xline": a.xline, "endian": a.endian, "sample_unit": a.sample_unit, "offset": a.offset}
    return submit_and_follow(a, out, {"kind": "import", "survey": a.name, "segy": segy})


@command("survey list")
def cmd_survey_list(a: argparse.Namespace, out: Out) -> int:
    rows = client_of(a).call("survey.list")["surveys"]
    out.emit({"surveys": rows}, lambda: _table(
        ["NAME", "SHAPE", "INLINES", "CROSSLINES", "SAMPLES", "VOLUMES", "PICKS"],
        [[r["name"], " x ".join(map(str, r.get("shape", []))), "-".join(map(str, r.get("inlines", []))),
          "-".join(map(str, r.get("crosslines", []))),
          "-".join(f"{v:g}" for v in r.get("samples", [])) + f" {r.get('sample_unit', '')}",
          ",".join(r.get("volumes", [])), ",".join(r.get("picks", [])) or "-"] for r in rows]))
    return EXIT_OK


@command("picks import")
def cmd_picks_import(a: argparse.Namespace, out: Out) -> int:
    picks = {"files": [str(Path(f).resolve()) for f in a.files], "set": a.set, "z_unit": a.z_unit,
             "drop_outside": a.drop_outside, "class_column": a.class_column}
    if a.pattern:
        picks["class_pattern"] = a.pattern
    return submit_and_follow(a, out, {"kind": "import", "survey": a.survey, "picks": picks})


@command("examples extract")
def cmd_examples_extract(a: argparse.Namespace, out: Out) -> int:
    job = {"kind": "extract", "examples": a.name, "notes": a.notes or "",
           "sources": [{"survey": s, "picks": a.picks, "volumes": a.volume or ["seismic"]} for s in a.survey],
           "crop": {"size": a.size, "orientation": a.orientation}}
    return submit_and_follow(a, out, job)


def _examples_action(action: str) -> Callable[[argparse.Namespace, Out], int]:
    def run(a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call("examples", action=action, name=getattr(a, "name", None),
                              value=getattr(a, "value", None))
        if action == "list":
            out.emit(r, lambda: _table(["NAME", "EXAMPLES", "CROP", "CLASSES", "LOCKED", "DEFAULT", "NOTES"],
                                       [[e["name"], e["count"], _crop_text(e["crop"]), len(e["classes"]),
                                         "yes" if e["locked"] else "", "*" if e["default"] else "",
                                         (e["notes"] or "")[:40]] for e in r["examples"]]))
        elif action == "rm":
            out.emit(r, lambda: print(f"removed example set {a.name}"))
        else:
            out.emit(r, lambda: print(yaml.safe_dump(r, sort_keys=False, default_flow_style=None).rstrip()))
        return EXIT_OK
    return run


def _crop_text(crop: Any) -> str:
    if isinstance(crop, dict):
        return "x".join(map(str, crop.get("size", []))) + f" {crop.get('orientation', '')}"
    return str(crop)


for _action in ("list", "info", "rename", "lock", "unlock", "rm", "default", "note"):
    COMMANDS[f"examples {_action}"] = _examples_action(_action)


@command("predict")
def cmd_predict(a: argparse.Namespace, out: Out) -> int:
    job: dict[str, Any] = {"kind": "predict", "model": a.model, "survey": a.survey, "output": a.name or a.model,
                           "outputs": a.outputs.split(","), "format": a.format, "stride": a.stride,
                           "overwrite": a.overwrite, "keep_arrays": a.keep_arrays, "device": a.device}
    figures: dict[str, Any] = {"enabled": not a.no_figures}
    for key, values in (("inlines", a.figure_inline), ("crosslines", a.figure_crossline), ("times", a.figure_time)):
        if values:
            figures[key] = values
    job["figures"] = figures
    optional = {"truth": a.truth, "overlap": a.overlap, "orientation": a.orientation, "batch_size": a.batch_size,
                "tile": [int(n) for n in a.tile.split(",")] if a.tile else None}
    job.update({k: v for k, v in optional.items() if v is not None})
    code = submit_and_follow(a, out, job)
    if code == EXIT_OK and not out.json and not a.detach:
        _print_prediction(client_of(a), a)
    return code


def _print_prediction(c: Client, a: argparse.Namespace) -> None:
    r = c.show(a.job_id).get("result") or {}
    paths = r.get("paths") or {}
    for p in paths.values() if isinstance(paths, dict) else paths:
        print(f"output  {p}")
    for f in r.get("figures") or []:
        print(f"figure  {f}")
    if r.get("scores"):
        s = r["scores"]
        print(f"scores  pixel accuracy {s['pixel_accuracy']:.4f}, mean class accuracy {s['mean_class_accuracy']:.4f}")


@command("stop-after-epoch")
def cmd_stop_after_epoch(a: argparse.Namespace, out: Out) -> int:
    r = client_of(a).call("stop_after_epoch", id=a.job)
    out.emit(r, lambda: print(f"job {a.job} stops after its current epoch"))
    return EXIT_OK


@command("models list")
def cmd_models_list(a: argparse.Namespace, out: Out) -> int:
    rows = client_of(a).call("models.list")["models"]
    out.emit({"models": rows}, lambda: _table(
        ["NAME", "ARCHITECTURE", "CLASSES", "INPUT", "JOB", "CREATED"],
        [[m["name"], m.get("architecture", "?"), len(m.get("classes") or []),
          "x".join(map(str, m.get("input_shape") or [])) + f" x{m.get('in_channels', '?')}ch",
          (m.get("provenance") or {}).get("job_id", "-"), (m.get("provenance") or {}).get("time_utc", "-")]
         for m in rows]))
    return EXIT_OK


def _info_command(op: str) -> Callable[[argparse.Namespace, Out], int]:
    def run(a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call(op, name=a.name)
        out.emit(r, lambda: print(yaml.safe_dump(r, sort_keys=False, default_flow_style=None).rstrip()))
        return EXIT_OK
    return run


def _rm_command(op: str, noun: str) -> Callable[[argparse.Namespace, Out], int]:
    def run(a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call(op, name=a.name)
        out.emit(r, lambda: print(f"removed {noun} {a.name}"))
        return EXIT_OK
    return run


COMMANDS.update({"survey info": _info_command("survey.info"), "survey rm": _rm_command("survey.rm", "survey"),
                 "models info": _info_command("models.info"), "models rm": _rm_command("models.rm", "model")})


# -- viewers ---------------------------------------------------------------------------------------------------


def _viewer_line(v: dict[str, Any]) -> str:
    where = v.get("url") or "-"
    extra = f" ({v['reason']})" if v.get("reason") else ""
    return f"{v['name']}: {v['state']} {where} pid {v.get('pid') or '-'}{extra}"


def _viewer_action(op: str) -> Callable[[argparse.Namespace, Out], int]:
    def run(a: argparse.Namespace, out: Out) -> int:
        c = client_of(a)
        if op in ("viewer.start", "viewer.restart"):
            args = {k: v for k, v in (("jobs", a.job), ("origins", a.origin)) if v}
            r = c.call(op, name=a.name, args=args or None)
            deadline = time.monotonic() + a.wait_s
            while r["state"] == "starting" and time.monotonic() < deadline:
                time.sleep(0.3)
                r = c.call("viewer.status", name=a.name)
            if r["state"] == "crashed":
                out.emit(r, lambda: print(_viewer_line(r) + f"\n  see `seisctl viewer logs {a.name}`"))
                return EXIT_FAILED
        else:
            r = c.call(op, name=getattr(a, "name", None))
        if "viewers" in r:
            out.emit(r, lambda: [print(_viewer_line(v)) for v in r["viewers"]] or print("no viewers"))
        else:
            out.emit(r, lambda: print(_viewer_line(r)))
        return EXIT_OK
    return run


for _op in ("start", "stop", "restart", "status"):
    COMMANDS[f"viewer {_op}"] = _viewer_action(f"viewer.{_op}")


@command("viewer logs")
def cmd_viewer_logs(a: argparse.Namespace, out: Out) -> int:
    c, offset, chunks = client_of(a), 0, []
    while True:
        r = c.call("viewer.logs", name=a.name, offset=offset)
        chunks.append(r["text"])
        offset = r["offset"]
        if offset >= r["size"]:
            break
    text = "".join(chunks)
    out.emit({"name": a.name, "text": text, "offset": offset}, lambda: sys.stdout.write(text))
    return EXIT_OK


# -- keys and doctor -------------------------------------------------------------------------------------------


@command("keys create")
def cmd_keys_create(a: argparse.Namespace, out: Out) -> int:
    import zmq.auth
    d = Path(a.dir).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = zmq.auth.create_certificates(str(d), a.name)
    os.chmod(secret, 0o600)
    r = {"public": str(public), "secret": str(secret)}
    out.emit(r, lambda: print(f"public key {public}\nsecret key {secret}  (keep it private)"))
    return EXIT_OK


@command("keys authorize")
def cmd_keys_authorize(a: argparse.Namespace, out: Out) -> int:
    import shutil

    import zmq.auth
    src = Path(a.public_key)
    try:
        zmq.auth.load_certificate(str(src))
    except (OSError, ValueError) as exc:
        print(f"seisctl: {src} is not a ZeroMQ public key file: {exc}", file=sys.stderr)
        return EXIT_USAGE
    home = Path(a.home).expanduser().resolve() if a.home else P.default_home()
    dest_dir = home / "keys" / "authorized"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copyfile(src, dest)
    out.emit({"authorized": str(dest)}, lambda: print(f"authorised {src.name}: the daemon of {home} accepts it now"))
    return EXIT_OK


@command("doctor")
def cmd_doctor(a: argparse.Namespace, out: Out) -> int:
    from client.doctor import run_checks
    checks = run_checks(a.home, a.timeout)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    out.emit({"checks": checks}, lambda: [print(f"[{marks[c['status']]}] {c['name']:16} {c['detail']}" +
                                                (f"\n       fix: {c['fix']}" if c.get("fix") else ""))
                                          for c in checks])
    return EXIT_ERROR if any(c["status"] == "fail" for c in checks) else EXIT_OK


# -- helpers ---------------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _job_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs a job."""
    p.add_argument("--priority", type=int, help="higher runs first (default: the job file's, else 0)")
    p.add_argument("--detach", action="store_true", help="print the job id and return at once")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="seisctl", description="Control a seisd daemon: jobs, devices, keys.")
    ap.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    ap.add_argument("--home", help="the daemon's home (default: $SEISD_HOME, else ~/.local/share/seisd)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = sub.add_parser("daemon", help="start, stop or inspect the daemon").add_subparsers(dest="sub", required=True)
    p = d.add_parser("start", help="start seisd in the background; returns once it answers")
    p.add_argument("--config", help="settings file for the daemon")
    p.add_argument("--wait-s", type=float, default=60.0)
    p = d.add_parser("stop", help="stop seisd; running jobs resume at the next start")
    p.add_argument("--wait-s", type=float, default=60.0)
    d.add_parser("status", help="version, pid, session, devices and job counts")

    p = sub.add_parser("submit", help="submit a job file (YAML); waits with a progress bar unless --detach")
    p.add_argument("file")
    _job_options(p)
    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--state", action="append", choices=P.JOB_STATES, help="only jobs in this state (repeatable)")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=50)
    for name, doc in (("show", "one job in detail"), ("watch", "follow a job until it ends; exits with its outcome"),
                      ("cancel", "cancel a queued or running job")):
        sub.add_parser(name, help=doc).add_argument("job", type=int)
    p = sub.add_parser("logs", help="print a job's log")
    p.add_argument("job", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p = sub.add_parser("workers", help="change the number of data workers of a running job")
    p.add_argument("job", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("predict", help="apply a model to a whole survey (a job): SEG-Y/HDF5 outputs and figures")
    p.add_argument("model", help="model name (seisctl models list)")
    p.add_argument("survey", help="survey name")
    p.add_argument("--name", help="output name: predictions/NAME (default: the model's name)")
    p.add_argument("--outputs", default="labels,confidence", help="comma-separated: labels, probabilities, "
                   "confidence (default labels,confidence)")
    p.add_argument("--format", choices=["segy", "hdf5", "both"], default="segy")
    p.add_argument("--truth", metavar="VOLUME", help="a label volume of the survey to score against")
    p.add_argument("--figure-inline", type=int, action="append", metavar="N", help="inline number to draw "
                   "(repeatable; default the middle one)")
    p.add_argument("--figure-crossline", type=int, action="append", metavar="N")
    p.add_argument("--figure-time", type=float, action="append", metavar="T")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--tile", help="fcn tile, e.g. 256,256")
    p.add_argument("--overlap", type=int)
    p.add_argument("--orientation", choices=["inline", "crossline", "both"])
    p.add_argument("--stride", type=int, default=1, help="patch models: every n-th voxel, filled (quick preview)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--keep-arrays", action="store_true", help="keep the .npy working arrays")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction of that name")
    _job_options(p)
    sub.add_parser("stop-after-epoch", help="a training job stops at the end of its epoch, saving its model"
                   ).add_argument("job", type=int)
    m = sub.add_parser("models", help="trained models: list, info, rm").add_subparsers(dest="sub", required=True)
    m.add_parser("list", help="models in the home")
    for name, doc in (("info", "architecture, classes, input, training, metrics, provenance"),
                      ("rm", "remove a model")):
        m.add_parser(name, help=doc).add_argument("name")
    v = sub.add_parser("viewer", help="viewer servers: tensorboard, examples (example sets and surveys)"
                       ).add_subparsers(dest="sub", required=True)
    for name, doc in (("start", "start a viewer (or get the running one) and print its URL"),
                      ("restart", "stop and start a viewer again")):
        p = v.add_parser(name, help=doc)
        p.add_argument("name", choices=["tensorboard", "examples"])
        p.add_argument("--job", type=int, action="append", help="tensorboard: only this job (repeatable; "
                       "default all jobs)")
        p.add_argument("--origin", action="append", metavar="HOST:PORT", help="examples: also accept pages "
                       "opened through this address (an SSH tunnel on another port; repeatable)")
        p.add_argument("--wait-s", type=float, default=60.0, help="wait until it answers (default 60 s; 0: "
                       "return at once)")
    v.add_parser("stop", help="stop a viewer (its log stays)").add_argument("name")
    v.add_parser("status", help="one viewer, or all").add_argument("name", nargs="?")
    v.add_parser("logs", help="a viewer's log, also after it stopped").add_argument("name")
    sub.add_parser("devices", help="device slots and their executors")
    sub.add_parser("doctor", help="check Python, packages, devices, /dev/shm, sockets and the daemon")

    s = sub.add_parser("survey", help="surveys: import SEG-Y, list, info, rm").add_subparsers(dest="sub", required=True)
    p = s.add_parser("import", help="import a post-stack 3D SEG-Y as a survey (a job; waits unless --detach)")
    p.add_argument("file")
    p.add_argument("--name", required=True, help="survey name")
    p.add_argument("--volume", default="seismic", help="volume (attribute) name (default seismic)")
    p.add_argument("--add", action="store_true", help="add the volume to the existing survey NAME")
    p.add_argument("--iline", type=int, default=189, help="inline number byte (default 189)")
    p.add_argument("--xline", type=int, default=193, help="crossline number byte (default 193)")
    p.add_argument("--endian", choices=["auto", "big", "little"], default="auto")
    p.add_argument("--sample-unit", choices=["ms", "s", "m"], default="ms")
    p.add_argument("--offset", type=int, help="import this one offset of a pre-stack file")
    _job_options(p)
    s.add_parser("list", help="surveys in the home")
    for name, doc in (("info", "geometry, volumes, statistics, pick sets"), ("rm", "remove a survey")):
        s.add_parser(name, help=doc).add_argument("name")

    pk = sub.add_parser("picks", help="import picks into a survey").add_subparsers(dest="sub", required=True)
    p = pk.add_parser("import", help="point files (inline, crossline, z): one per class, or with a class column")
    p.add_argument("survey")
    p.add_argument("files", nargs="+")
    p.add_argument("--set", default="default", help="pick set name (default: default)")
    p.add_argument("--pattern", help="regex with (?P<name>...) taking the class from the file name "
                   "(default multi_(?P<name>.+)_ilxl)")
    p.add_argument("--class-column", type=int, help="0-based column of integer class ids")
    p.add_argument("--z-unit", choices=["ms", "s", "sample", "auto"], default="auto")
    p.add_argument("--drop-outside", action="store_true", help="drop points outside the survey instead of refusing")
    _job_options(p)

    e = sub.add_parser("examples", help="example sets: extract, list, info, rename, lock, unlock, rm, default, note"
                       ).add_subparsers(dest="sub", required=True)
    p = e.add_parser("extract", help="crops around picks into an example set (a job)")
    p.add_argument("name")
    p.add_argument("--survey", action="append", required=True, help="source survey (repeatable)")
    p.add_argument("--picks", default="default", help="pick set of each survey")
    p.add_argument("--volume", action="append", help="volume as a channel (repeatable; default seismic)")
    p.add_argument("--size", type=int, nargs="+", required=True, help="crop size: 2 numbers, or 3 for 3d")
    p.add_argument("--orientation", choices=["inline", "crossline", "time", "3d"], default="inline")
    p.add_argument("--notes")
    _job_options(p)
    e.add_parser("list", help="example sets in the home")
    for name, doc in (("info", "metadata"), ("lock", "protect from rm, rename, overwrite"), ("unlock", "unprotect"),
                      ("rm", "remove"), ("default", "make it the default set")):
        e.add_parser(name, help=doc).add_argument("name")
    p = e.add_parser("rename", help="rename a set")
    p.add_argument("name")
    p.add_argument("value", metavar="new_name")
    p = e.add_parser("note", help="replace a set's notes")
    p.add_argument("name")
    p.add_argument("value", metavar="text")

    k = sub.add_parser("keys", help="CURVE keys for tcp access").add_subparsers(dest="sub", required=True)
    p = k.add_parser("create", help="create a key pair NAME.key (public) and NAME.key_secret")
    p.add_argument("name")
    p.add_argument("--dir", default=".", help="where to write the pair (default: here)")
    p = k.add_parser("authorize", help="let the holder of a public key connect over tcp")
    p.add_argument("public_key")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    name = a.cmd + (f" {a.sub}" if getattr(a, "sub", None) else "")
    out = Out(a.json)
    try:
        return COMMANDS[name](a, out)
    except DaemonUnavailable as exc:
        _error(out, "unavailable", exc.message)
        return EXIT_NO_DAEMON
    except SeisdError as exc:
        _error(out, exc.code, exc.message, exc.details)
        return EXIT_USAGE if exc.code in ("invalid_job", "bad_args") else EXIT_ERROR
    except KeyboardInterrupt:
        print("\nseisctl: interrupted (the job, if any, goes on)", file=sys.stderr)
        return 130


def _error(out: Out, code: str, message: str, details: dict[str, Any] | None = None) -> None:
    if out.json:
        print(json.dumps({"error": {"code": code, "message": message, "details": details or {}}}))
        return
    problems = (details or {}).get("problems")
    if problems:
        print(f"seisctl: {code}: refused, {len(problems)} problem{'s' if len(problems) > 1 else ''}:",
              file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    else:
        print(f"seisctl: {code}: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
