"""What a second training on the same CPU does to a training's speed and to the CPU time it is charged per step.

    python tools/bench_contention.py [--steps N] [--long]

Each run is a child process that trains the default facies job's model (configs/train_facies_unet.yaml: three
U-Nets, base 16, depth 4, batches of 8 crops of 64 x 64, AdamW) on random batches in memory, with the executor's
allocator settings and torch's default threads (one per core), and reports optimiser steps per second of wall time
and CPU seconds per torch thread per step: the quantity `train.budget_clock: cpu` counts. Runs:

- ``alone``: one child on an otherwise idle machine (the baseline);
- ``pair``: two children at once, as when a second job or another user's work shares the machine;
- ``passive_alone`` / ``passive_pair``: the same with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep at a barrier
  instead of spinning), the usual remedy for oversubscription, measured for what it costs when the machine is idle;
- ``shared_pair``: two children at once, each with its share of the cores (OMP_NUM_THREADS = cores // 2), as the
  README advises for a daemon on a shared machine and as the test suite runs its two workers.

Ratios (against ``alone`` of the same run): ``pair_cpu_per_step_ratio`` (above 1: the cpu clock charges a busy
run for more than its work, so a budget on it stops the run after fewer epochs), ``pair_throughput_ratio`` (both
children's steps per second together, against one alone), ``passive_alone_speed_ratio``,
``passive_pair_throughput_ratio`` and ``shared_pair_throughput_ratio``. Prints one JSON line. Default (6 steps a child)
about a minute on a 2-core machine; --long runs 48.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(steps: int) -> dict[str, float]:
    """Train the default job's model for `steps` steps (after 3 of warm-up); wall and CPU time per step."""
    sys.path.insert(0, str(ROOT))
    import torch

    from daemon.common import malloc
    from daemon.executor.models import build_model
    from daemon.executor.training.loop import sparse_loss

    malloc.tune()
    torch.manual_seed(0)
    model = build_model("unet", 1, 7, (64, 64), {"base": 16, "depth": 4, "members": 3})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 1, 64, 64), torch.randint(0, 7, (8, 64, 64))

    def step() -> None:
        loss = sparse_loss(model(x), y, None, y.numel())  # the training loop's loss: the members' mean
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    wall, cpu = time.monotonic(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return {"steps_per_s": steps / wall, "cpu_per_thread_per_step": cpu / torch.get_num_threads() / steps}


def run(copies: int, steps: int, passive: bool, threads: int | None = None) -> list[dict[str, float]]:
    """`copies` children at once, each with `threads` torch threads (None: torch's default); their reports."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--child", str(steps)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"bench_contention: a child failed with exit code {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per child (default 6; --long: 48)")
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child)))
        return 0
    steps = a.steps or (48 if a.long else 6)
    runs: dict[str, Any] = {}
    share = max(1, (os.cpu_count() or 1) // 2)
    for name, copies, passive, threads in (("alone", 1, False, None), ("pair", 2, False, None),
                                           ("passive_alone", 1, True, None), ("passive_pair", 2, True, None),
                                           ("shared_pair", 2, False, share)):
        reports = run(copies, steps, passive, threads)
        runs[name] = {"steps_per_s": round(sum(r["steps_per_s"] for r in reports), 3),
                      "cpu_per_thread_per_step": round(max(r["cpu_per_thread_per_step"] for r in reports), 4)}
    alone = runs["alone"]
    print(json.dumps({
        "bench": "contention", "steps": steps, "cores": os.cpu_count(), "runs": runs,
        "pair_cpu_per_step_ratio": round(runs["pair"]["cpu_per_thread_per_step"] / alone["cpu_per_thread_per_step"], 3),
        "pair_throughput_ratio": round(runs["pair"]["steps_per_s"] / alone["steps_per_s"], 3),
        "passive_alone_speed_ratio": round(runs["passive_alone"]["steps_per_s"] / alone["steps_per_s"], 3),
        "passive_pair_throughput_ratio": round(runs["passive_pair"]["steps_per_s"] / alone["steps_per_s"], 3),
        "shared_pair_throughput_ratio": round(runs["shared_pair"]["steps_per_s"] / alone["steps_per_s"], 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
