"""Survey size against time and memory: SEG-Y cubes of growing size up to F3's (651 x 951 x 462), each through a
real daemon (local backend, the CPU slot), so growth that is faster than the cube shows.

    python tools/bench_scale.py            # two small cubes (96 samples), about a minute
    python tools/bench_scale.py --long     # 1/64, 1/16, 1/4 and all of F3's 286 M voxels (1.3 GB of SEG-Y)

For each cube (inline-sorted IEEE SEG-Y, --long with F3's 462 samples, written in the temp folder, deleted after):
  import      the import job's time (in its executor) against a plain sequential read of the same file, both
              cold (the file's pages evicted first, as tools/bench_import.py does, then for files of 256 MB and
              more a 4 s rest before each: bench_import's NOTE [first touch on a VM]; `first_touch_s_per_gb`
              says what new memory cost in the run; target: import at least half as fast as the read);
  unet        a predict job with a U-Net (whole inline sections, the default recipe, SEG-Y out, figures):
              apply seconds (the model over the cube) and the job's seconds, each per voxel;
  patch       the patch classifier (33 x 33 crops) at a preview stride (8: one crop per 512 voxels, filled) as a
              whole job, and at stride 1 (a crop per voxel) timed on one inline of the cube: a job with one inline
              per chunk, timed between its first and second chunk on disk, then cancelled (a whole F3 at stride 1
              is hours on 2 CPU cores; `whole_cube_estimate_s` says how many). On a CPU, cubes wider than
              --stride1-max-crops crosslines x samples get the last measured time per voxel (`estimated_from`);
  train       a U-Net train job (one epoch, 2 data workers, crops around the picks of one inline);
  memory      peak RssAnon (anonymous resident memory: mapped file pages and the workers' shared ring do not
              count) of the daemon, of the executor in each phase, and of the data workers during the train job.
Time per voxel is given in nanoseconds (`ns_per_voxel`; `job_cpu_ns_per_voxel`: the executor's CPU seconds over the
job, steadier than wall time on a shared machine); `growth` divides the largest cube's figures by the smallest's.
Targets: import >= 0.5 x sequential read at the largest size (a small cube's import is the job's fixed costs: a
survey folder, its fsynced markers, the geometry file, tens of ms against a read of a few ms; every size's ratio is
in `sizes`); U-Net apply time per voxel at the largest size <= 1.2 x the smallest's;
at the largest size the daemon's RssAnon < 300 MB and the executor's < 1500 MB. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from bench_import import SETTLE_S, first_touch_s_per_gb, sequential_read, settled_cold  # noqa: E402
from scale_data import AnonPeaks, free_bytes, save_models, write_cube, write_picks  # noqa: E402

from tests.harness import RunningDaemon  # noqa: E402

F3 = (651, 951, 462)
DEFAULT_SIZES = [(16, 48, 96), (32, 80, 96)]   # small, and short traces: the default run takes about a minute
LONG_SIZES = [(81, 119, 462), (163, 238, 462), (326, 476, 462), F3]   # 1/64, 1/16, 1/4, 1 of F3's voxels
PREVIEW_STRIDE = 8
STRIDE1_MAX_CROPS = 120_000   # crops per inline (crosslines x samples) the stride-1 probe runs for: at most about
                              # 30 s an inline on 2 cores; wider cubes report an estimate from the last one measured
TARGETS = {"import_vs_sequential": 0.5, "unet_ns_per_voxel_growth": 1.2, "daemon_rss_anon_mb": 300,
           "executor_rss_anon_mb": 1500}


@dataclass
class Bench:
    """The daemon the jobs run in, the memory sampler, and the device the predict and train jobs ask for."""

    d: RunningDaemon
    peaks: AnonPeaks
    device: str
    stride1_max_crops: int = STRIDE1_MAX_CROPS
    skip: frozenset[str] = frozenset()  # phases left out (--skip)


def executors(b: Bench) -> None:
    """Point the sampler at the executors running now (a slot's executor may have been replaced)."""
    b.peaks.executor_pids = [s["executor_pid"] for s in b.d.client.devices() if s["executor_pid"]]


def run_job(d: RunningDaemon, job: dict[str, Any], timeout: float = 7200) -> dict[str, Any]:
    record = d.client.wait(d.client.submit(job)["id"], timeout=timeout)
    if record["state"] != "succeeded":
        raise SystemExit(f"{job['kind']} job {record['id']} {record['state']}: {record['error']}\n"
                         f"{d.client.logs(record['id'])['text'][-3000:]}")
    return record


def ran_s(record: dict[str, Any]) -> float:
    """Seconds from the job's last `running` to its end, as its history says (what the executor spent)."""
    history = record["history"]
    start = [h["time"] for h in history if h["state"] == "running"][-1]
    return history[-1]["time"] - start


def ns(seconds: float, voxels: int) -> float:
    return round(1e9 * seconds / voxels, 2)


def import_figures(b: Bench, segy: Path, name: str, voxels: int) -> dict[str, Any]:
    """The import job against sequential reads of the file, both cold (its pages evicted first, as bench_import
    measures: a warm read is a memory copy that no import, which converts and writes, can come near), and each
    after the same rest (bench_import.settled_cold: on a VM the cost of new pages depends on how long ago the guest
    freed them; `first_touch_s_per_gb` says what it was in this run). The rest is skipped for files under 256 MB,
    whose fresh pages cost too little to matter, so the default run stays short."""
    rest = SETTLE_S if segy.stat().st_size >= 256 << 20 else 0.0
    os.sync()
    warm = min(sequential_read(segy, chunk) for chunk in (1 << 20, 64 << 20))
    cold = []
    for chunk in (1 << 20, 64 << 20):
        settled_cold(segy, rest)
        cold.append(sequential_read(segy, chunk))
    executors(b)
    settled_cold(segy, rest)
    with b.peaks.phase("import"):
        record = run_job(b.d, {"kind": "import", "survey": name, "segy": {"file": str(segy)}})
    import_s, read_s = ran_s(record), min(cold)
    return {"sequential_read_s": round(read_s, 4), "warm_read_s": round(warm, 4), "import_s": round(import_s, 3),
            "import_vs_sequential": round(read_s / import_s, 3), "ns_per_voxel": ns(import_s, voxels),
            "first_touch_s_per_gb": round(first_touch_s_per_gb(rest), 3),
            "cpu_ns_per_voxel": ns(b.peaks.phases["import"]["executor_cpu_s"], voxels)}


def predict_figures(b: Bench, name: str, voxels: int, phase: str, job: dict[str, Any]) -> dict[str, Any]:
    output = f"{name}-{phase}"
    executors(b)
    with b.peaks.phase(phase):
        record = run_job(b.d, {"kind": "predict", "survey": name, "output": output, "device": b.device, **job})
    shutil.rmtree(b.d.home / "predictions" / output, ignore_errors=True)
    apply_s, job_s = record["result"]["seconds"], ran_s(record)
    cpu_s = b.peaks.phases[phase]["executor_cpu_s"]
    return {"apply_s": round(apply_s, 3), "job_s": round(job_s, 3), "ns_per_voxel": ns(apply_s, voxels),
            "job_ns_per_voxel": ns(job_s, voxels), "job_cpu_ns_per_voxel": ns(cpu_s, voxels),
            "chunk_inlines": record["result"]["chunk_inlines"], "batch_size": record["result"]["batch_size"]}


def patch_stride1(b: Bench, name: str, shape: tuple[int, int, int]) -> dict[str, Any]:
    """Stride 1 timed on one inline: one inline per chunk; the time between the first and the second chunk
    recorded in progress.json; then the job is cancelled."""
    output, d = f"{name}-patch1", b.d
    progress = d.home / "predictions" / output / "arrays" / "progress.json"
    executors(b)
    with b.peaks.phase("predict_patch_stride1"):
        jid = d.client.submit({"kind": "predict", "model": "patch", "survey": name, "output": output, "stride": 1,
                               "device": b.device,
                               "chunk_inlines": 1, "outputs": ["labels"], "format": "hdf5",
                               "figures": {"enabled": False}})["id"]
        marks: list[float] = []
        while len(marks) < 2:
            state = d.client.show(jid)["state"]
            if state in ("failed", "cancelled", "succeeded"):
                raise SystemExit(f"patch stride-1 job {jid} {state} before two chunks: {d.client.show(jid)['error']}")
            try:
                done = len(json.loads(progress.read_text())["state"]["done"])
            except (OSError, ValueError, KeyError):
                done = 0
            if done > len(marks):
                marks.append(time.monotonic())
            time.sleep(0.02)
        d.client.cancel(jid)
        d.client.wait(jid, timeout=600)
    shutil.rmtree(d.home / "predictions" / output, ignore_errors=True)
    per_inline = marks[1] - marks[0]
    return {"inline_s": round(per_inline, 3), "ns_per_voxel": ns(per_inline, shape[1] * shape[2]),
            "whole_cube_estimate_s": round(per_inline * shape[0])}


def train_figures(b: Bench, name: str) -> dict[str, Any]:
    job = {"kind": "train", "output": f"{name}-train", "overwrite": True, "device": b.device,
           "data": {"survey": name, "crop": {"size": [32, 64]}, "batch_size": 8, "batches_per_epoch": 8,
                    "val_batches": 0, "workers": 2, "split": {"kind": "random", "val_fraction": 0.05}},
           "model": {"name": "unet", "params": {"base": 8}},
           "train": {"epochs": 1, "seed": 0, "checkpoint_every_steps": None, "checkpoint_every_minutes": None,
                     "early_stop": {"enabled": False}}}
    executors(b)
    with b.peaks.phase("train"):
        record = run_job(b.d, job)
    return {"job_s": round(ran_s(record), 3), "samples_per_s": round(record["result"]["samples_per_s"], 1),
            "data_startup_s": record["result"].get("data_startup_s")}


def measure(b: Bench, work: Path, shape: tuple[int, int, int]) -> dict[str, Any]:
    ni, nx, ns_ = shape
    d, peaks = b.d, b.peaks
    voxels, name = ni * nx * ns_, f"c{ni}x{nx}"
    folder = work / name
    folder.mkdir()
    need = voxels * 4 * 5
    if free_bytes(work) < need:
        return {"shape": list(shape), "skipped": f"needs {need / 1e9:.1f} GB free in {work}"}
    t0 = time.monotonic()
    segy = folder / "cube.sgy"
    size = write_cube(segy, shape)
    picks = write_picks(folder / "picks", shape)
    out: dict[str, Any] = {"shape": list(shape), "voxels": voxels, "segy_bytes": size,
                           "write_segy_s": round(time.monotonic() - t0, 2)}
    out["import"] = import_figures(b, segy, name, voxels)
    segy.unlink()
    run_job(d, {"kind": "import", "survey": name, "picks": {"files": [str(p) for p in picks],
                                                             "class_pattern": r"(?P<name>.+)\.pts"}})
    if "predict_unet" not in b.skip:
        out["predict_unet"] = predict_figures(b, name, voxels, "predict_unet", {"model": "unet"})
    if "patch_preview" not in b.skip:
        out["predict_patch_preview"] = {"stride": PREVIEW_STRIDE, **predict_figures(
            b, name, voxels, "predict_patch_preview", {"model": "patch", "stride": PREVIEW_STRIDE})}
    if nx * ns_ <= b.stride1_max_crops and "patch_stride1" not in b.skip:
        out["predict_patch_stride1"] = patch_stride1(b, name, shape)
    if "train" not in b.skip:
        out["train"] = train_figures(b, name)
    # SEG-Y in, labels out as SEG-Y: the import and the U-Net predict job, as a user runs them
    if "predict_unet" in out:
        out["end_to_end_unet_s"] = round(out["import"]["import_s"] + out["predict_unet"]["job_s"], 2)
    shutil.rmtree(d.home / "surveys" / name, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    executor = {phase: p.get("executor") for phase, p in peaks.phases.items()}
    out["rss_anon_mb"] = {"daemon": max(p.get("daemon", 0.0) for p in peaks.phases.values()),
                          "executor": max(v for v in executor.values() if v), "executor_by_phase": executor,
                          "data_workers": {k: peaks.phases.get("train", {}).get(f"children_{k}")
                                           for k in ("max", "sum")}}
    out["seconds"] = round(time.monotonic() - t0, 1)
    peaks.phases.clear()
    return out


def estimate_stride1(sizes: list[dict[str, Any]]) -> None:
    """A cube too wide for the stride-1 probe gets the time per voxel of the last cube measured, as an estimate."""
    last, measured = sizes[-1], [s["predict_patch_stride1"] for s in sizes if "predict_patch_stride1" in s
                                 and "estimated_from" not in s["predict_patch_stride1"]]
    if "skipped" in last or "predict_patch_stride1" in last or not measured:
        return
    per_voxel = measured[-1]["ns_per_voxel"]
    last["predict_patch_stride1"] = {
        "estimated_from": [s["shape"] for s in sizes if s.get("predict_patch_stride1") is measured[-1]][0],
        "ns_per_voxel": per_voxel, "whole_cube_estimate_s": round(per_voxel * last["voxels"] / 1e9)}


def growth(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    done = [s for s in sizes if "skipped" not in s]
    first, last = done[0], done[-1]
    probed = [s["predict_patch_stride1"] for s in done if "estimated_from" not in s.get("predict_patch_stride1", {
        "estimated_from": None})]
    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    return {"voxels": ratio(last["voxels"], first["voxels"]),
            "import_ns_per_voxel": ratio(last["import"]["ns_per_voxel"], first["import"]["ns_per_voxel"]),
            **{f"{k}_ns_per_voxel": ratio(last.get(k, {}).get("ns_per_voxel"), first.get(k, {}).get("ns_per_voxel"))
               for k in ("predict_unet", "predict_patch_preview")},
            "predict_patch_stride1_ns_per_voxel_measured": ratio(probed[-1]["ns_per_voxel"], probed[0]["ns_per_voxel"])
            if probed else None,
            "unet_job_ns_per_voxel": ratio(last.get("predict_unet", {}).get("job_ns_per_voxel"),
                                           first.get("predict_unet", {}).get("job_ns_per_voxel")),
            "unet_job_cpu_ns_per_voxel": ratio(last.get("predict_unet", {}).get("job_cpu_ns_per_voxel"),
                                               first.get("predict_unet", {}).get("job_cpu_ns_per_voxel")),
            "daemon_rss_anon": ratio(last["rss_anon_mb"]["daemon"], first["rss_anon_mb"]["daemon"]),
            "executor_rss_anon": ratio(last["rss_anon_mb"]["executor"], first["rss_anon_mb"]["executor"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true",
                    help="up to F3's size (1.3 GB of SEG-Y; about 7 minutes on a quiet 2-core machine)")
    ap.add_argument("--sizes", help="cubes to run instead, e.g. 100x200x462,651x951x462")
    ap.add_argument("--tmp", default=None, help="folder for the temporary cubes and home (default: the system's)")
    ap.add_argument("--device", default="cpu", help="what the predict and train jobs ask for: cpu or cuda")
    ap.add_argument("--stride1-max-crops", type=int, default=None, help="time the patch model at stride 1 on "
                    f"cubes with at most this many crosslines x samples (default {STRIDE1_MAX_CROPS}; on a GPU: all)")
    ap.add_argument("--skip", default="", help="phases to leave out, comma-separated: patch_preview, patch_stride1, "
                    "train, predict_unet (the import always runs)")
    a = ap.parse_args(argv)
    # a cancelled job (the stride-1 probe) stops between batches: give it time rather than replace its executor
    env = {"SEISD_EXECUTOR__CANCEL_GRACE_S": "120"} | ({} if a.device == "cpu" else {"SEISD_DEVICES": "auto"})
    sizes = ([tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")] if a.sizes
             else LONG_SIZES if a.long else DEFAULT_SIZES)
    t0 = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="seisd-bench-scale-", dir=a.tmp) as tmp:
        work = Path(tmp)
        save_models(work / "home" / "models")
        with RunningDaemon(work / "home", env=env, start_timeout=60, client_timeout=60) as d:
            peaks = AnonPeaks(d.pid)
            try:
                for shape in sizes:
                    limit = a.stride1_max_crops or (STRIDE1_MAX_CROPS if a.device == "cpu" else 1 << 62)
                    skip = frozenset(p for p in a.skip.split(",") if p)
                    results.append(measure(Bench(d, peaks, a.device, limit, skip), work, shape))
                    estimate_stride1(results)
                    # each cube's figures as they come (stderr): a run stopped half-way keeps what it measured
                    print(f"bench_scale: {shape} done in {results[-1].get('seconds')} s: {json.dumps(results[-1])}",
                          file=sys.stderr, flush=True)
            finally:
                peaks.close()
    last = [s for s in results if "skipped" not in s][-1]
    met = {"import_vs_sequential": last["import"]["import_vs_sequential"] >= TARGETS["import_vs_sequential"]}
    g = growth(results)
    met["unet_ns_per_voxel_growth"] = (g["predict_unet_ns_per_voxel"] <= TARGETS["unet_ns_per_voxel_growth"]
                                       if g["predict_unet_ns_per_voxel"] is not None else None)  # skipped
    met["daemon_rss_anon_mb"] = last["rss_anon_mb"]["daemon"] < TARGETS["daemon_rss_anon_mb"]
    met["executor_rss_anon_mb"] = last["rss_anon_mb"]["executor"] < TARGETS["executor_rss_anon_mb"]
    import torch

    print(json.dumps({"bench": "scale", "long": a.long, "device": a.device, "threads": torch.get_num_threads(),
                      "sizes": results, "growth": g, "targets": TARGETS, "targets_met": met,
                      "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
