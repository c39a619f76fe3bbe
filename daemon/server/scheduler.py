"""Scheduler: which queued job goes to which free device slots. Pure logic, no I/O.

Order: highest priority first, then first submitted (the store hands jobs over in that order). A job that cannot run
yet (its device is busy) does not block jobs behind it that can run on another free slot; among jobs that want the
same slot, order decides.

Most jobs take one slot. A job whose kind wants N GPU slots (its `slots` hook, daemon/kinds/registry.py: a
data-parallel train job's `train.distributed.world_size`) takes N GPU slots at once on CUDA, all or none
(`slots_wanted`): rank 0 runs in the first slot's executor, rank r in a process that sees only the r-th slot's
device (daemon/executor/training/distributed.py).

NOTE [no starving]
  A job wanting N slots while fewer than N it accepts are free would never start if the jobs behind it kept taking
  each slot as it frees. So the first such job in order RESERVES the free slots it accepts: jobs behind it may
  only use slots it cannot use, until enough have freed and it starts. Only the first waiting multi-slot job
  reserves, and it never waits for slots that do not exist: `device_available` refuses at submit a job wanting more
  slots than the machine has.

Before that, NOTE [one writer] (`one_writer`) keeps back queued jobs that would write what a running job writes.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Protocol, TypeVar


class _Job(Protocol):
    id: int
    device: str


_J = TypeVar("_J")


def slot_accepts(slot_name: str, wanted: str, kind_devices: str) -> bool:
    """Can a job that asks for `wanted` (auto, cpu, cuda, cuda:N) run on `slot_name`?"""
    is_cpu = slot_name == "cpu"
    if kind_devices == "cpu":
        return is_cpu
    if wanted == "auto":
        return True
    if wanted == "cpu":
        return is_cpu
    if wanted == "cuda":
        return not is_cpu
    return slot_name == wanted


Accepts = Callable[[str, str, str], bool]  # (slot name, wanted device, kind's devices) -> may run there


def group_accepts(slot_name: str, wanted: str, kind_devices: str, count: int, accepts: Accepts = slot_accepts) -> bool:
    """Can `slot_name` be one of the `count` slots of a job? Several slots are always GPUs (cuda or auto)."""
    if count <= 1:
        return accepts(slot_name, wanted, kind_devices)
    return (slot_name != "cpu" and kind_devices != "cpu" and wanted in ("auto", "cuda")
            and accepts(slot_name, wanted, kind_devices))


def slots_wanted(gpus: int, wanted: str, slot_names: Iterable[str]) -> int:
    """How many slots a job takes that its kind says wants `gpus` GPU slots (JobKind.slots_needed): all of them
    when it will run on CUDA; else 1.

    On the CPU the ranks share the one CPU slot (Gloo ranks spawned inside one executor), a job for one named
    device (cuda:N) cannot spread, and `auto` means CUDA only when the machine has GPU slots."""
    if gpus <= 1 or wanted == "cpu" or wanted.startswith("cuda:"):
        return 1
    return gpus if any(name != "cpu" for name in slot_names) else 1


def assign(queued: Iterable[_Job], free_slots: list[str], kind_devices: dict[int, str],
           wants: Mapping[int, int] | None = None, accepts: Accepts = slot_accepts) -> list[tuple[int, str]]:
    """Pairs (job id, slot) to start now; a job taking N slots (`wants`, default 1) appears in N pairs in a row,
    its first slot first. `free_slots` lists idle slots, GPUs before the CPU, so `auto` jobs take a GPU when one is
    free and fall back to the CPU otherwise. `accepts` is the backend's rule (default: this machine's slots).
    See NOTE [no starving] for jobs that wait for several slots."""
    free = list(free_slots)
    wants = wants or {}
    reserved: set[str] = set()
    waiting_group = False
    out: list[tuple[int, str]] = []
    for job in queued:
        count = max(1, int(wants.get(job.id, 1)))
        kinds = kind_devices.get(job.id, "any")
        usable = [s for s in free if s not in reserved and group_accepts(s, job.device, kinds, count, accepts)]
        if len(usable) >= count:
            taken = usable[:count]
            out.extend((job.id, s) for s in taken)
            free = [s for s in free if s not in taken]
        elif count > 1 and not waiting_group:
            waiting_group = True  # the first multi-slot job that must wait holds what it can use
            reserved.update(usable)
        if not [s for s in free if s not in reserved]:
            break
    return out


def one_writer(queued: Iterable[_J], running: Iterable[_J], writes: Callable[[_J], tuple[str, ...]]) -> list[_J]:
    """The queued jobs (in order) that may start now under NOTE [one writer].

    NOTE [one writer]: two jobs that write the same thing in the home (a survey, an example set, a model, a
    prediction: their kinds' `writes` hook, daemon/kinds/registry.py) never run at once. A queued job waits while a
    running job writes one of its names, and behind an earlier queued job that does (queue order), so the earlier
    one starts first whichever slot frees up. Without it two imports of one survey on two slots (several CPU slots,
    or a Ray cluster) would share one half-built folder, and two predicts of one output would write one file."""
    taken = {name for job in running for name in writes(job)}
    out = []
    for job in queued:
        names = writes(job)
        if not taken.isdisjoint(names):
            continue
        taken.update(names)
        out.append(job)
    return out


def groups(pairs: Iterable[tuple[int, str]]) -> dict[int, list[str]]:
    """assign's pairs as job id -> its slots (first slot first), in the order the jobs start."""
    out: dict[int, list[str]] = {}
    for job_id, slot in pairs:
        out.setdefault(job_id, []).append(slot)
    return out


def device_available(wanted: str, kind_devices: str, slots: list[str], count: int = 1) -> bool:
    """Whether the configured slots could ever run the job (checked at submit: a job for cuda:3 on a CPU-only
    machine, or for 4 GPUs on a machine with 2, is refused, not queued forever)."""
    return sum(group_accepts(s, wanted, kind_devices, count) for s in slots) >= count
