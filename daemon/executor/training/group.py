"""Leaving a data-parallel run's process group, the same way for spawned ranks, Ray ranks and rank 0."""
from __future__ import annotations

import logging
from datetime import timedelta

import torch.distributed as dist

LEAVE_TIMEOUT_S = 30.0   # how long a finished rank waits for the others before it leaves the group

log = logging.getLogger("seisd.training")  # the logger a rank writes its rank<r>.log with


def leave_group(finished: bool) -> None:
    """Leave the process group. After a run every rank finished, first meet the others at a barrier (at most
    LEAVE_TIMEOUT_S): a rank that tears its connections down while a peer still reads from them can make gloo abort
    that peer (a rank exited with SIGABRT after logging that its share was done, on a loaded machine)."""
    if not dist.is_initialized():
        return
    if finished:
        try:
            dist.barrier(async_op=True).wait(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - a peer already gone: leave anyway; its exit code tells the rest
            log.info("leaving the process group without the others: %s", exc)
    dist.destroy_process_group()
