"""Sharded prediction: one whole-volume predict split into inline ranges run by parallel processes.

    result = predict_sharded(ShardPlan(model_file, survey_folder, volumes, out_dir, outputs, apply_kwargs,
                                       batch_size, chunk_inlines, device), shards=4,
                             progress=..., should_stop=...)

Steps:
  1. The caller's process plans the prediction with predict_volume(chunks=[]): it fixes batch and chunk sizes,
     creates the output memmaps and progress.json (or finds them, on resume) and runs nothing.
  2. The chunks not yet done are cut into `shards` contiguous inline ranges. One spawned process per range
     loads the model file, maps the survey and runs predict_volume(chunks=its range) into the SAME outputs; each
     chunk is marked done in progress.json under a file lock (ProgressRecord.mark_done), so a kill at any moment
     leaves a record that a resume (sharded or not) continues from.
  3. The caller relays the shards' progress as one figure and a cancel as a stop event; exports happen once,
     afterwards, in the job runner.

Who runs the shards is a `ShardRunner`: by default processes spawned here (`run_shard_processes`, on this
machine, used by the local backend); on the Ray backend, Ray tasks on any node (daemon/executor/predict/ray_shards.py).

A chunk's numbers depend only on the chunk, the settings and the batch size, so the outputs are the same bytes
whether the chunks ran in one process or in several (labels bit for bit; probabilities too on one machine, as
the same kernels run on the same inputs; across machines with other CPUs or GPUs, allclose).

NOTE [failure]
  A shard that raises sends its traceback and exits 1; one that is killed just exits. Either way the caller stops
  the other shards (stop event, then kill after SHARD_STOP_GRACE_S) and raises ShardError naming the shard, its
  inline range and its exit. Shards arm PR_SET_PDEATHSIG: they die with the executor.
"""
from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection  # noqa: F401 (loads mp.connection)
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from daemon.common.devices import threads_each
from daemon.executor.predict.apply import ProgressCallback, StopCallback, predict_volume, smoothed_outputs

SHARD_STOP_GRACE_S = 10.0
POLL_S = 0.1


class ShardError(RuntimeError):
    """A shard of a sharded prediction failed; the message names it, its inlines and its error."""


@dataclass(frozen=True)
class ShardPlan:
    """Everything a shard process needs to apply the model to its chunks (picklable: no arrays, no model)."""

    model_file: str
    survey_folder: str
    volumes: tuple[str, ...]
    out_dir: str
    outputs: tuple[str, ...]
    apply_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int | str = "auto"
    chunk_inlines: int | None = None
    device: str = "cpu"


def split_chunks(todo: Sequence[int], shards: int) -> list[list[int]]:
    """Contiguous, non-empty runs of the remaining chunks, as even as possible, at most `shards` of them."""
    return [list(map(int, part)) for part in np.array_split(np.asarray(todo, dtype=np.int64), shards) if len(part)]


@dataclass(frozen=True)
class ShardRange:
    """One shard: its index, its chunks and the inlines they cover (first, last)."""

    index: int
    chunks: list[int]
    inlines: tuple[int, int]


def chunks_inlines(chunks: Sequence[int], step: int, ni: int) -> int:
    """How many inlines chunks of `step` inlines cover in a volume of `ni` inlines (the last chunk may be short)."""
    return sum(min(k * step + step, ni) - k * step for k in chunks)


@dataclass(frozen=True)
class ShardLayout:
    """What a runner needs to turn chunks into inlines for progress: chunk size, inline count, inlines done."""

    chunk_inlines: int
    n_inlines: int
    done_inlines: int

    def inlines_of(self, chunks: Sequence[int]) -> int:
        return chunks_inlines(chunks, self.chunk_inlines, self.n_inlines)

    def report(self, progress: ProgressCallback, ran: float, seconds: float, what: str) -> None:
        """One progress call for `ran` inlines predicted in `seconds` by this run, on top of those done before."""
        rate = ran / seconds if seconds > 0 and ran > 0 else 0.0
        done = self.done_inlines + ran
        eta = (self.n_inlines - done) / rate if rate > 0 else None
        progress(done / self.n_inlines, eta, f"{what}: {done:.0f} of {self.n_inlines} inlines")


# (plan, shards, layout, progress, should_stop) -> True when stopped by should_stop; raises ShardError on failure
ShardRunner = Callable[[ShardPlan, list[ShardRange], ShardLayout, ProgressCallback | None, StopCallback | None],
                       bool]


def shard_device(device: str, shard: int) -> str:
    """CUDA: shards take the visible devices in turn; CPU: every shard on the CPU."""
    if str(device).startswith("cuda") and torch.cuda.device_count() > 1:
        return f"cuda:{shard % torch.cuda.device_count()}"
    return str(device)


def _volumes(plan: ShardPlan) -> Any:
    from workers.survey import Survey

    survey = Survey.open(Path(plan.survey_folder))
    volumes = [survey.volume(v) for v in plan.volumes]
    return volumes if len(volumes) > 1 else volumes[0]


def _load_model(plan: ShardPlan) -> torch.nn.Module:
    from daemon.executor.modelfile import load_model_file

    return load_model_file(Path(plan.model_file))[0]


def _apply(plan: ShardPlan, model: torch.nn.Module, chunks: list[int], device: str,
           progress: ProgressCallback | None = None, should_stop: StopCallback | None = None) -> dict:
    return predict_volume(model, _volumes(plan), out_dir=plan.out_dir, outputs=plan.outputs,
                          batch_size=plan.batch_size, device=device, chunk_inlines=plan.chunk_inlines,
                          resume=True, chunks=chunks, progress=progress, should_stop=should_stop,
                          **plan.apply_kwargs)


def run_shard(plan: ShardPlan, shard: int, chunks: list[int], progress: ProgressCallback | None = None,
              should_stop: StopCallback | None = None) -> dict:
    """Predict one shard's chunks into the plan's outputs (in whatever process runs the shard)."""
    return _apply(plan, _load_model(plan), chunks, shard_device(plan.device, shard), progress=progress,
                  should_stop=should_stop)


def shard_main(plan: ShardPlan, shard: int, chunks: list[int], threads: int, conn: Any, stop: Any) -> None:
    """Entry of a shard process: predict its chunks; send ('progress', fraction) messages, then one result."""
    from daemon.common import malloc
    from workers.worker import arm_parent_death_signal

    arm_parent_death_signal()
    malloc.tune()
    torch.set_num_threads(threads)
    try:
        result = run_shard(plan, shard, chunks, progress=lambda f, eta, msg: conn.send(("progress", f)),
                           should_stop=stop.is_set)
        conn.send(("result", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise SystemExit(1)
    finally:
        conn.close()


@dataclass
class _Shard:
    index: int
    chunks: list[int]
    inlines: tuple[int, int]
    proc: Any
    conn: Any
    fraction: float = 0.0
    result: dict | None = None
    error: str | None = None


def predict_sharded(plan: ShardPlan, shards: int, model: torch.nn.Module | None = None,
                    progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
                    runner: ShardRunner | None = None) -> dict:
    """Predict the whole volume in `shards` parts; returns predict_volume's result form plus `shards`.

    `model` (optional) is the already loaded model, used only to plan; the shards load the model file.
    `runner` runs the shards (default: processes of this one, run_shard_processes).
    """
    t0 = time.monotonic()
    model = model if model is not None else _load_model(plan)
    planned = _apply(plan, model, [], plan.device)
    # the shards run in the number format the plan resolved ('auto' could resolve otherwise on another machine,
    # and the progress record's key holds it: a shard with another one would be refused)
    plan = replace(plan, apply_kwargs=plan.apply_kwargs | {"precision": planned["precision"]})
    done = set(planned["done"])
    step, (ni, nx, ns) = planned["chunk_inlines"], planned["shape"]
    parts = split_chunks([k for k in range(planned["n_chunks"]) if k not in done], shards)
    ranges = [ShardRange(i, chunks, (chunks[0] * step, min(chunks[-1] * step + step, ni) - 1))
              for i, chunks in enumerate(parts)]
    layout = ShardLayout(step, ni, chunks_inlines(done, step, ni))
    stopped = (runner or run_shard_processes)(plan, ranges, layout, progress, should_stop)
    final = _apply(plan, model, [], plan.device)
    seconds = time.monotonic() - t0
    ran = layout.inlines_of(set(final["done"]) - done)
    status = "complete" if len(final["done"]) == final["n_chunks"] else "stopped"
    if status == "complete" and plan.apply_kwargs.get("smooth"):  # after every shard: it reads across their ranges
        final["paths"] = smoothed_outputs(Path(plan.out_dir), plan.apply_kwargs["smooth"], final["paths"], progress)
    return final | {"status": "stopped" if stopped and status != "complete" else status,
                    "resumed_from_chunk": len(done), "seconds": seconds,
                    "voxels_per_s": ran * nx * ns / seconds if seconds > 0 else None,
                    "shards": [{"shard": r.index, "inlines": list(r.inlines), "chunks": len(r.chunks)}
                               for r in ranges]}


def run_shard_processes(plan: ShardPlan, ranges: list[ShardRange], layout: ShardLayout,
                        progress: ProgressCallback | None, should_stop: StopCallback | None) -> bool:
    """The default ShardRunner: one spawned process per shard on this machine; True when stopped."""
    stop = mp.get_context("spawn").Event()
    started = _start(plan, ranges, stop)
    return _watch(started, stop, layout, progress, should_stop)


def _start(plan: ShardPlan, ranges: list[ShardRange], stop: Any) -> list[_Shard]:
    from workers.pool import _main_module_hidden

    ctx = mp.get_context("spawn")
    threads = threads_each(len(ranges))   # the executor's threads shared out
    shards = []
    with _main_module_hidden():  # shards import what they need; they must not re-run the executor's main
        for r in ranges:
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=shard_main, args=(plan, r.index, r.chunks, threads, child, stop),
                               name=f"seisd-shard-{r.index}")
            proc.start()
            child.close()  # ours; EOF on the parent end then means the shard is gone
            shards.append(_Shard(r.index, r.chunks, r.inlines, proc, parent))
    return shards


def _watch(shards: list[_Shard], stop: Any, layout: ShardLayout, progress: ProgressCallback | None,
           should_stop: StopCallback | None) -> bool:
    """Relay progress and cancel until every shard has ended; True when stopped by should_stop."""
    t0, last, stopped = time.monotonic(), 0.0, False
    try:
        while any(s.proc.is_alive() for s in shards):
            waitables = [s.conn for s in shards if not s.conn.closed] + [s.proc.sentinel for s in shards]
            mp.connection.wait(waitables, timeout=POLL_S)
            _check(shards)
            if should_stop is not None and not stopped and should_stop():
                stopped = True
                stop.set()
            now = time.monotonic()
            if progress is not None and now - last >= 0.5:
                last = now
                ran = sum(s.fraction * (s.inlines[1] - s.inlines[0] + 1) for s in shards)
                layout.report(progress, ran, now - t0, f"{len(shards)} shards")
        _check(shards)
    finally:
        _stop_all(shards, stop)
    return stopped


def _check(shards: list[_Shard]) -> None:
    """Take the shards' messages; raise ShardError for the first that failed."""
    for s in shards:
        _drain(s)
    for s in shards:
        if s.error is not None or (s.proc.exitcode not in (None, 0)):
            raise ShardError(_describe(s))


def _drain(s: _Shard) -> None:
    """Read every message a shard has sent."""
    try:
        while not s.conn.closed and s.conn.poll():
            kind, value = s.conn.recv()
            if kind == "progress":
                s.fraction = float(value)
            elif kind == "result":
                s.result, s.fraction = value, 1.0
            else:
                s.error = value
    except (EOFError, OSError):
        s.conn.close()


def _describe(s: _Shard) -> str:
    return shard_failure(s.index, s.inlines, s.error or f"the process ended with exit code {s.proc.exitcode} "
                         "(killed?)")


def shard_failure(index: int, inlines: tuple[int, int], why: str) -> str:
    """The message of a ShardError: which shard, its inlines, why, and what to do."""
    return (f"shard {index} (inlines {inlines[0]}-{inlines[1]}) failed: {why}. Chunks already written are "
            "kept in progress.json; rerun the job (or let the daemon retry it) to continue from them")


def _stop_all(shards: list[_Shard], stop: Any) -> None:
    """Ask the shards still running to stop, then kill those that do not within SHARD_STOP_GRACE_S."""
    if any(s.proc.is_alive() for s in shards):
        stop.set()
    deadline = time.monotonic() + SHARD_STOP_GRACE_S
    for s in shards:
        s.proc.join(max(0.0, deadline - time.monotonic()))
        if s.proc.is_alive():
            s.proc.kill()
            s.proc.join(5.0)
        if not s.conn.closed:
            s.conn.close()
