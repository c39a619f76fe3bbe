"""Load: N concurrent clients (threads, one client.Client each) sending a mix of requests for a while; latency per
operation. Shared by tests/reliability/test_load.py and tools/bench_reliability.py."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.api import Client, SeisdError

MIX: list[tuple[str, dict[str, Any]]] = [
    ("ping", {}), ("status", {}), ("jobs", {"limit": 20}), ("devices", {}), ("survey.list", {}),
    ("models.list", {}), ("examples", {"action": "list"}), ("show", {"id": -1}), ("logs", {"id": -1}),
    ("events", {"id": -1}),
]


@dataclass
class LoadResult:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """p50/p99 in ms per operation and over all, plus counts."""
        every = sorted(x for v in self.latencies.values() for x in v)
        per_op = {op: {"n": len(v), "p50_ms": round(pct(sorted(v), 50) * 1e3, 3),
                       "p99_ms": round(pct(sorted(v), 99) * 1e3, 3)} for op, v in sorted(self.latencies.items())}
        return {"requests": self.requests, "errors": len(self.errors),
                "p50_ms": round(pct(every, 50) * 1e3, 3), "p99_ms": round(pct(every, 99) * 1e3, 3), "ops": per_op}


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q / 100))]


def run_load(home: Path, job_id: int, clients: int, seconds: float, seed: int = 0) -> LoadResult:
    """`clients` threads, each with its own Client, send the MIX (job ops on `job_id`) until `seconds` pass."""
    result = LoadResult()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        mine: dict[str, list[float]] = {}
        errors: list[str] = []
        with Client(home=home, timeout=30) as c:
            while time.monotonic() < stop_at:
                op, args = rng.choice(MIX)
                args = {**args, "id": job_id} if args.get("id") == -1 else args
                t0 = time.perf_counter()
                try:
                    c.call(op, **args)
                except SeisdError as exc:
                    errors.append(f"{op}: {exc.code}: {exc.message}")
                mine.setdefault(op, []).append(time.perf_counter() - t0)
        with lock:
            for op, v in mine.items():
                result.latencies.setdefault(op, []).extend(v)
                result.requests += len(v)
            result.errors += errors

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return result
