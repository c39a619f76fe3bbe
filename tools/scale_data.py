"""What tools/bench_scale.py measures with: SEG-Y cubes of any size written fast, pick files, model files, and a
sampler of the anonymous resident memory (RssAnon) of the daemon, its executor and the executor's children.

RssAnon (from /proc/PID/status) counts the memory a process allocated itself: heap, arrays, torch tensors. Pages of
memory-mapped files (the survey cache, prediction outputs) and shared memory (the data workers' batch ring) are
RssFile and RssShmem and do not count: the kernel can drop or share them.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import psutil

SAMPLE_US = 4000        # 4 ms samples, F3's
N_CLASSES = 4


def write_cube(path: Path, shape: tuple[int, int, int], seed: int = 0) -> int:
    """An inline-sorted SEG-Y (IEEE float, format 5, big-endian) of `shape` = (inlines, crosslines, samples) with
    inline/crossline numbers (bytes 189/193) and CDP coordinates in the standard bytes; returns its size in bytes.
    Written with numpy an inline at a time (segyio's per-trace header writes would take minutes for F3)."""
    text = ("C 1 seisd tools/bench_scale.py synthetic cube".ljust(80) * 40).encode("cp500")  # EBCDIC
    return _write(path, text, shape, np.random.default_rng(seed))


def _binary_header(nx: int, ns: int) -> bytes:
    """The 400-byte binary header: traces per ensemble, sample interval, samples per trace, format 5, SEG-Y rev 1,
    fixed-length traces."""
    h = np.zeros(200, ">i2")
    h[(3213 - 3201) // 2] = nx
    h[(3217 - 3201) // 2] = SAMPLE_US
    h[(3221 - 3201) // 2] = ns
    h[(3225 - 3201) // 2] = 5           # IEEE float
    h[(3229 - 3201) // 2] = 4           # horizontally stacked
    h[(3255 - 3201) // 2] = 1           # metres
    h[(3501 - 3201) // 2] = 0x0100      # SEG-Y revision 1
    h[(3503 - 3201) // 2] = 1           # fixed-length traces
    return h.tobytes()


def _write(path: Path, text: bytes, shape: tuple[int, int, int], rng: np.random.Generator) -> int:
    ni, nx, ns = shape
    record = np.dtype([("h", "u1", 240), ("d", ">f4", ns)])
    block = np.zeros(nx, record)
    words = block["h"].view(">i4").reshape(nx, 60)        # 4-byte header fields at (byte - 1) / 4
    halves = block["h"].view(">i2").reshape(nx, 120)      # 2-byte fields at (byte - 1) / 2
    halves[:, (29 - 1) // 2] = 1                           # trace id: seismic
    halves[:, (71 - 1) // 2] = 1                           # coordinate scalar
    halves[:, (115 - 1) // 2] = ns
    halves[:, (117 - 1) // 2] = SAMPLE_US
    xl = np.arange(1, nx + 1, dtype=np.int32)
    words[:, (193 - 1) // 4] = xl
    words[:, (185 - 1) // 4] = 605000 + 25 * xl
    with open(path, "wb") as fh:
        fh.write(text[:3200])
        fh.write(_binary_header(nx, ns))
        for i in range(ni):
            k = i * nx + np.arange(1, nx + 1, dtype=np.int32)
            words[:, 0] = k                                # trace sequence number in line
            words[:, 1] = k                                # ... in file
            words[:, (189 - 1) // 4] = i + 1
            words[:, (181 - 1) // 4] = 6000000 + 25 * (i + 1)
            block["d"] = rng.standard_normal((nx, ns), dtype=np.float32)
            fh.write(block.tobytes())
    return path.stat().st_size


def write_picks(folder: Path, shape: tuple[int, int, int]) -> list[Path]:
    """Pick files `class<k>.pts` on the middle inline (the user story: one inline labelled in part): the middle
    half of the crosslines, every 2nd crossline and 8th sample, the class a band of depth."""
    folder.mkdir(parents=True, exist_ok=True)
    ni, nx, ns = shape
    xs = np.arange(nx // 4, max(nx // 4 + 1, 3 * nx // 4), 2)
    ss = np.arange(4, ns - 4, 8)
    paths = []
    for k in range(N_CLASSES):
        band = ss[(ss * N_CLASSES // ns) == k]
        rows = [f"{ni // 2 + 1}\t{x + 1}\t{s * SAMPLE_US / 1000:g}\n" for x in xs for s in band]
        path = folder / f"class{k}.pts"
        path.write_text("".join(rows))
        paths.append(path)
    return paths


def save_models(models: Path) -> dict[str, Path]:
    """Model files with seeded, untrained weights, as a train job writes them: `unet` (a U-Net applied to whole
    inline sections) and `patch` (a patch classifier on 33 x 33 crops). Imports torch: call it once."""
    import torch

    from daemon.executor.modelfile import ModelInfo, save_model_file
    from daemon.executor.models import build_model

    out = {}
    for name, (arch, crop, params, kind) in {"unet": ("unet", (128, 128), {"base": 8, "depth": 3}, "fcn"),
                                             "patch": ("patchcnn", (33, 33), {"filters": [8, 16]}, "patch")}.items():
        torch.manual_seed(0)
        model = build_model(arch, 1, N_CLASSES, crop, params).eval()
        info = ModelInfo(name=arch, params=params, in_channels=1, n_classes=N_CLASSES, input_shape=list(crop),
                         classes=[f"class{k}" for k in range(N_CLASSES)],
                         input_spec={"apply_kind": kind, "crop": list(crop), "orientation": "inline",
                                     "volumes": ["seismic"], "picks": "default", "context": 0},
                         normalisation={"volumes": [{"mean": 0.0, "std": 1.0}]})
        out[name] = save_model_file(models / f"{name}.h5", model, info)
    return out


def rss_anon_mb(pid: int) -> float | None:
    """RssAnon of a process in MB (10^6 bytes), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class AnonPeaks:
    """Polls RssAnon of the daemon, its executors (the largest) and the executors' descendants (data workers, shard
    processes) every `interval` seconds in a thread; `phase(name)` records the peaks seen while its block runs."""

    def __init__(self, daemon_pid: int, interval: float = 0.05) -> None:
        self.daemon_pid, self.interval = daemon_pid, interval
        self.executor_pids: list[int] = []
        self.phases: dict[str, dict[str, float]] = {}
        self._now: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-anon", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sample = {"daemon": rss_anon_mb(self.daemon_pid) or 0.0}
            if self.executor_pids:
                sample["executor"] = max(rss_anon_mb(p) or 0.0 for p in self.executor_pids)
                kids = []
                for pid in self.executor_pids:
                    try:
                        parent = psutil.Process(pid)
                        # a child between fork and exec shares its parent's pages (and counts them): not yet one
                        kids += [k for k in parent.children(recursive=True) if _execed(k, parent)]
                    except psutil.NoSuchProcess:
                        pass
                sizes = [s for s in (rss_anon_mb(k.pid) for k in kids) if s]
                sample["children_max"] = max(sizes, default=0.0)
                sample["children_sum"] = sum(sizes)
            with self._lock:
                for key, value in sample.items():
                    self._now[key] = max(self._now.get(key, 0.0), value)

    def _cpu_s(self) -> float:
        """CPU seconds (user + system) the executors have used, their ended children's included."""
        total = 0.0
        for pid in self.executor_pids:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Peaks while the block runs, and the executors' CPU seconds over it (`executor_cpu_s`: on a shared
        machine a steadier measure of work than wall time)."""
        with self._lock:
            self._now = {}
        cpu0 = self._cpu_s()
        try:
            yield
        finally:
            time.sleep(2 * self.interval)
            with self._lock:
                self.phases[name] = {k: round(v, 1) for k, v in self._now.items()}
                self.phases[name]["executor_cpu_s"] = round(self._cpu_s() - cpu0, 3)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _execed(child: psutil.Process, parent: psutil.Process) -> bool:
    try:
        return child.cmdline() != parent.cmdline()
    except psutil.Error:
        return False


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
