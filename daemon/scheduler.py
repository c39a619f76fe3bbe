"""Scheduler: which queued job goes to which free device slot. Pure logic, no I/O.

Order: highest priority first, then first submitted (the store hands jobs over in that order). A job that cannot run
yet (its device is busy) does not block jobs behind it that can run on another free slot; among jobs that want the
same slot, order decides.
"""
from __future__ import annotations

from typing import Iterable, Protocol


class _Job(Protocol):
    id: int
    device: str


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


def assign(queued: Iterable[_Job], free_slots: list[str], kind_devices: dict[int, str]) -> list[tuple[int, str]]:
    """Pairs (job id, slot) to start now. `free_slots` lists idle slots, GPUs before the CPU, so `auto` jobs take a
    GPU when one is free and fall back to the CPU otherwise."""
    free = list(free_slots)
    out: list[tuple[int, str]] = []
    for job in queued:
        if not free:
            break
        for slot in free:
            if slot_accepts(slot, job.device, kind_devices.get(job.id, "any")):
                out.append((job.id, slot))
                free.remove(slot)
                break
    return out


def device_available(wanted: str, kind_devices: str, slots: list[str]) -> bool:
    """Whether any configured slot could ever run the job (checked at submit: a job for cuda:3 on a CPU-only
    machine is refused, not queued forever)."""
    return any(slot_accepts(s, wanted, kind_devices) for s in slots)
