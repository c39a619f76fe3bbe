"""daemon/common/malloc.py: the executors' glibc settings keep a step's re-allocations off fresh pages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Allocate and free blocks of 1 to 8 MiB, 40 MiB in all, 20 times (as a training step does with its activations),
# and count the minor page faults: with glibc's defaults the freed top of the heap goes back to the kernel and each
# round faults in fresh pages; with the settings the memory is reused.
PROBE = """
import json, sys
import numpy as np
from daemon.common import malloc
applied = malloc.tune() if sys.argv[1] == "tune" else False
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
SIZES = [1, 2, 3, 4, 6, 8, 16]
def step():
    blocks = [np.ones(mb << 18, dtype=np.float32) for mb in SIZES]
    del blocks
for _ in range(3):
    step()
before = faults()
for _ in range(20):
    step()
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env},
                         timeout=120)
    return json.loads(out.stdout)


@pytest.mark.skipif(not Path("/proc/self/stat").exists() or sys.platform != "linux", reason="Linux (glibc) only")
def test_tuned_process_reuses_memory_instead_of_faulting_in_fresh_pages() -> None:
    plain, tuned = _probe("plain"), _probe("tune")
    assert tuned["applied"]
    assert plain["faults"] > 20 * 1000  # 10,240 pages a round are touched
    assert tuned["faults"] < 1000
    # an admin's own MALLOC_* variable wins: nothing is changed then
    assert _probe("tune", MALLOC_ARENA_MAX="2")["applied"] is False
