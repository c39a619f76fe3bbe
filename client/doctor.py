"""`seisctl doctor`: what a user checks when something is off. Each check: ok, warn or fail, with a fix."""
from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from client import protocol as P
from client.api import Client, DaemonUnavailable

PACKAGES = ("numpy", "torch", "pyzmq", "h5py", "segyio", "psutil", "tensorboard", "pyyaml", "pydantic")
SHM_WANTED = 1 << 30  # training ring buffers want room; Docker gives 64 MiB by default


def _check(name: str, status: str, detail: str, fix: str | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, "fix": fix}


def run_checks(home: str | None, timeout: float) -> list[dict[str, Any]]:
    home_path = Path(home).expanduser().resolve() if home else P.default_home()
    checks = [_check("python", "ok" if sys.version_info >= (3, 10) else "fail", sys.version.split()[0],
                     None if sys.version_info >= (3, 10) else "seisd needs Python 3.10 or newer")]
    for pkg in PACKAGES:
        try:
            checks.append(_check(pkg, "ok", md.version(pkg)))
        except md.PackageNotFoundError:
            checks.append(_check(pkg, "fail", "not installed", "make install (or pip install -e .)"))
    import zmq
    checks.append(_check("libzmq", "ok" if zmq.has("curve") else "warn", f"{zmq.zmq_version()}, CURVE "
                         f"{'available' if zmq.has('curve') else 'missing'}",
                         None if zmq.has("curve") else "tcp endpoints need a libzmq built with CURVE"))
    checks.append(_cuda())
    checks.append(_shm())
    checks.append(_disk(home_path))
    checks.append(_runtime_dir(home_path))
    checks += _daemon(home_path, timeout)
    return checks


def _cuda() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return _check("cuda", "fail", "torch is not installed", "pip install torch==2.13.0")
    if not torch.cuda.is_available():
        return _check("cuda", "ok", f"no CUDA device (torch {torch.__version__}); jobs run on the CPU")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return _check("cuda", "ok", f"{len(names)} device(s): {', '.join(names)}; CUDA {torch.version.cuda}")


def _shm() -> dict[str, Any]:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return _check("/dev/shm", "fail", "missing", "the data workers need a tmpfs at /dev/shm")
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    detail = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
    if free < SHM_WANTED:
        return _check("/dev/shm", "warn", detail, "too small for training batches: in Docker run with "
                      "--shm-size=2g, or lower the batch size and ring slots")
    return _check("/dev/shm", "ok", detail)


def _disk(home: Path) -> dict[str, Any]:
    probe = home if home.exists() else home.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    status = "ok" if free > 5 * 2**30 else "warn"
    return _check("home disk", status, f"{home}: {free / 2**30:.1f} GiB free",
                  None if status == "ok" else "surveys, checkpoints and predictions need room: free some space")


def _runtime_dir(home: Path) -> dict[str, Any]:
    d = P.runtime_dir(home)
    if not d.exists():
        return _check("sockets", "ok", f"{d} not created yet (the daemon makes it, mode 0700)")
    st = d.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.getuid() or mode & 0o077:
        return _check("sockets", "fail", f"{d} is mode {mode:o}, owner uid {st.st_uid}",
                      f"it must be yours and 0700: remove it ({d}) and start the daemon again")
    return _check("sockets", "ok", f"{d} mode 0700, yours")


def _daemon(home: Path, timeout: float) -> list[dict[str, Any]]:
    """The daemon's own check, and what it found about its key files (tcp with CURVE only)."""
    try:
        s = Client(home=home, timeout=min(timeout, 3.0)).status()
    except DaemonUnavailable as exc:
        return [_check("daemon", "warn", exc.message, "seisctl daemon start")]
    slots = ", ".join(f"{d['slot']} ({d['state']})" for d in s["devices"])
    out = [_check("daemon", "ok", f"seisd {s['version']} pid {s['pid']}; slots: {slots}")]
    security = s.get("security") or {}
    if security.get("tcp"):
        warnings = security.get("warnings") or []
        out.append(_check("tcp keys", "warn" if warnings else "ok",
                          "; ".join(warnings) if warnings else f"{security.get('authorized', 0)} authorised keys",
                          "fix the modes or files named" if warnings else None))
    return out
