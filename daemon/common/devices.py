"""Device slots: each CUDA device, and the CPU. Found without importing torch (the daemon never does)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

JOB_DEVICES_FILE = "devices.json"  # in a job's folder: the CUDA devices of the slots it holds, its first slot's first


@dataclass(frozen=True)
class DeviceSlot:
    name: str                 # "cpu" or "cuda:N"
    kind: str                 # "cpu" or "cuda"
    index: int | None         # CUDA index, None for the CPU
    description: str

    def env(self) -> dict[str, str]:
        """Environment for the slot's executor: it sees exactly its device, as cuda:0 when it has one."""
        return {"CUDA_VISIBLE_DEVICES": "" if self.index is None else str(self.index)}

    @property
    def torch_device(self) -> str:
        return "cpu" if self.index is None else "cuda:0"


def omp_threads() -> int | None:
    """OMP_NUM_THREADS of this process's environment ("4,2", nested levels: the first counts); None where it is
    unset or not a positive number. The one reader of the variable: cpu_threads here, Ray tasks' task_threads."""
    text = (os.environ.get("OMP_NUM_THREADS") or "").split(",")[0].strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def cpu_threads() -> int:
    """The CPU threads this process computes with: OMP_NUM_THREADS where its environment sets it (the daemon's
    `executor.threads`, or the daemon's own environment: an admin sharing the machine, the test suite's workers),
    else one per core. torch follows the same variable at start; ranks and shards share this number out."""
    return omp_threads() or os.cpu_count() or 1


def threads_each(parts: int) -> int:
    """This process's threads (cpu_threads) shared out among `parts` processes it starts (data-parallel ranks,
    predict shards), at least one each, so together they do not oversubscribe the cores."""
    return max(1, cpu_threads() // max(1, parts))


def cuda_devices() -> list[DeviceSlot]:
    """CUDA devices as nvidia-smi lists them; none when there is no driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    slots = []
    for line in out.strip().splitlines():
        idx, name, mem = (p.strip() for p in line.split(",", 2))
        slots.append(DeviceSlot(f"cuda:{idx}", "cuda", int(idx), f"{name}, {mem}"))
    return slots


def discover(setting: str | list[str]) -> list[DeviceSlot]:
    """The slots to run: `auto` = every CUDA device and the CPU; `cpu`; or an explicit list."""
    cpu = DeviceSlot("cpu", "cpu", None, "CPU")
    if setting == "cpu":
        return [cpu]
    found = cuda_devices()
    if setting == "auto":
        return found + [cpu]
    by_name = {s.name: s for s in found}
    slots = []
    for name in setting:
        if name == "cpu":
            slots.append(cpu)
        elif name in by_name:
            slots.append(by_name[name])
        else:
            raise ValueError(f"devices: {name!r} is not present (found: {', '.join(by_name) or 'no CUDA device'})")
    return slots


def write_job_devices(job_dir: Path, cuda_indices: list[int]) -> Path:
    """Record the CUDA devices a job holds (its slots, first slot first) where its ranks will read them."""
    path = Path(job_dir) / JOB_DEVICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cuda": [int(i) for i in cuda_indices]}))
    return path


def read_job_devices(job_dir: Path) -> list[int]:
    """The CUDA devices recorded for a job (write_job_devices); empty when it holds one slot or none was recorded."""
    path = Path(job_dir) / JOB_DEVICES_FILE
    try:
        return [int(i) for i in json.loads(path.read_text())["cuda"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a device record ({exc}); delete it and rerun the job") from None
