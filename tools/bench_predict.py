"""Throughput of prediction: whole-volume apply end to end vs the forward pass alone, and streaming over the socket.

Prints one JSON line:
  unet      voxels/s end to end (read a memmapped volume, tile, infer, blend, write .npy outputs) with the default
            recipe (whole sections up to 512 x 512, channels-last), the forward pass alone on the same tiles, their
            ratio, and the old defaults (128 x 128 tiles, quarter overlap, contiguous layout) as a baseline;
  patchcnn  crops/s end to end (stride 2 preview) vs the forward pass alone on as many crops;
  disagreement  voxels/s of the default facies model (three members, both orientations) end to end with outputs
            labels + confidence vs with the disagreement output as well, and the ratio (what the output costs);
  precision voxels/s of the same model end to end in float32 vs the default precision ('auto': bfloat16 where the
            CPU or GPU computes it natively), their ratio, and the share of voxels labelled alike;
  stream    blocks/s and latency of stream.apply (one inline per block) vs the same blocks applied in-process by
            StreamSession, in turn block by block in the same run (the paired difference of the latencies is the
            cost of the trip), both ways a client of this machine can send them: `direct` (client -> the
            executor's direct endpoint -> client, what client.Stream does where the daemon offers it) and `relay`
            (client -> daemon -> executor and back); and `hop`: how long a message an executor's job queues takes
            to reach the daemon's socket;
  opendtect blocks/s and latency of the OpendTect endpoint (OpendTect's framing, one request per connection,
            docs/opendtect.md) vs stream.apply on the same blocks and daemon, alternating, and whether the outputs
            are equal.
The ratios are medians over 7 rounds (an end-to-end run, then the forward passes alone) of the round's
forward-only / end-to-end time; ``ratio_best_vs_best`` compares the best round of each side. The vps figures are
the best rounds; this process takes the executors' malloc settings (daemon/common/malloc.py) first. Data and the
daemon's home are made in a temp folder. --long uses bigger volumes and more blocks.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.common import malloc  # noqa: E402
from daemon.executor.modelfile import ModelInfo, save_model_file  # noqa: E402
from daemon.executor.models import build_model  # noqa: E402
from daemon.executor.predict.apply import predict_volume  # noqa: E402
from daemon.executor.predict.engine import _engine, prepared  # noqa: E402
from daemon.executor.predict.recipe import recipe_of  # noqa: E402

UNET = {"base": 8, "depth": 3, "norm": "batch"}
N_CLASSES = 4
STREAM_ROUNDS = 5   # rounds of the three stream sides taking turns (bench_stream)
STREAM_RUN = 5   # blocks a stream side sends back to back before the next side's turn (the first is not counted)
STREAM_TIMEOUT_S = 310.0  # above the daemon's own 300 s for stream.apply (docs/PROTOCOL.md, client timeouts)
DISAGREEMENT_ROUNDS = 4  # pairs of runs of the disagreement figure (a three-member model applied both ways is slow)
REPEATS = 7  # rounds of end-to-end then forward-only: this VM varies +-15 % from one run to the next


def sync(device: str) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously: time only what has finished)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_only(model: torch.nn.Module, inputs: np.ndarray, batch: int, layout=None, device: str = "cpu",
                 precision: str = "float32") -> float:
    """Seconds for the forward passes alone over prepared inputs (after one warm-up batch), inputs copied to the
    device as they go, in the number format the apply engine used (bfloat16: under autocast, as the engine)."""
    with torch.inference_mode():
        def run(k: int) -> None:
            x = torch.from_numpy(inputs[k:k + batch]).to(device)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                model(x.contiguous(memory_format=layout) if layout is not None else x)
        run(0)
        sync(device)
        t0 = time.perf_counter()
        for k in range(0, len(inputs), batch):
            run(k)
        sync(device)
    return time.perf_counter() - t0


def unet_info(shape: tuple[int, int, int]) -> ModelInfo:
    return ModelInfo(name="unet", params=UNET, in_channels=1, n_classes=N_CLASSES, input_shape=[128, 128],
                     input_spec={"apply_kind": "fcn", "crop": [128, 128], "orientation": "inline",
                                 "volumes": ["seismic"]})


def bench_unet(folder: Path, shape: tuple[int, int, int], device: str = "cpu") -> dict:
    volume = np.lib.format.open_memmap(folder / "seis.npy", mode="w+", dtype=np.float32, shape=shape)
    volume[:] = np.random.default_rng(0).normal(size=shape)
    volume.flush()
    volume = np.load(folder / "seis.npy", mmap_mode="r")
    model = build_model("unet", 1, N_CLASSES, (128, 128), UNET).eval()
    kw = recipe_of(unet_info(shape)).apply_kwargs(shape)
    predict_volume(model, volume[:1], out_dir=folder / "warm", device=device, resume=False, **kw)  # warm-up
    engine = _engine(model, [volume], device, "fcn", None, kw["tile"], kw["overlap"], "inline", None, 1)
    inputs = np.stack([engine.reader.tile_input(t, engine.plan.input_shape) for t in engine.plan.tiles])
    # REPEATS rounds, each an end-to-end run then the forward passes alone, so other load hits both alike.
    runs, forwards = [], []
    for _ in range(REPEATS):
        cpu0 = time.process_time()
        runs.append(predict_volume(model, volume, out_dir=folder / "unet", outputs=("labels", "confidence"),
                                   device=device, resume=False, **kw))
        runs[-1]["cpu_s"] = time.process_time() - cpu0
        # the forward passes of the model as prediction runs it (engine.prepared: the copy, its layout)
        forwards.append(forward_only(engine.model, inputs, runs[-1]["batch_size"], engine.memory_format, device,
                                     runs[-1]["precision"]))
    result = min(runs, key=lambda r: r["seconds"])
    seconds = min(forwards)
    old = build_model("unet", 1, N_CLASSES, (128, 128), UNET).eval().to(device)
    old_t0 = time.perf_counter()
    with torch.inference_mode():
        # The old defaults: 128 x 128 tiles with a quarter overlap, batches of 8, contiguous layout, no blending
        # (the engine only cuts the tiles; the model runs as it is).
        old_engine = _engine(old, [volume], device, "fcn", None, (128, 128), (32, 32), "inline", None, 1)
        tiles = [old_engine.reader.tile_input(t, (128, 128)) for t in old_engine.plan.tiles]
        for k in range(0, len(tiles), 8):
            old(torch.from_numpy(np.stack(tiles[k:k + 8])).to(device))
        sync(device)
    old_seconds = time.perf_counter() - old_t0
    voxels = int(np.prod(shape))
    return {"shape": list(shape), "tile": list(kw["tile"]), "overlap": list(kw["overlap"]),
            "tiles": len(inputs), "batch_size": result["batch_size"], "precision": result["precision"],
            "end_to_end_vps": round(voxels / result["seconds"]), "forward_only_vps": round(voxels / seconds),
            # What the run would reach with every core to itself: voxels per CPU-second times the threads used.
            # Only an estimate (on a busy machine, waiting threads still spin), shown next to the wall-clock figure.
            "end_to_end_vps_per_cpu_s_x_threads": round(voxels / result["cpu_s"] * torch.get_num_threads()),
            "ratio_end_to_end_vs_forward": paired_ratio(forwards, [r["seconds"] for r in runs]),
            "ratio_best_vs_best": round(seconds / result["seconds"], 3),
            "old_defaults_forward_only_vps": round(voxels / old_seconds),
            "speedup_vs_old_defaults": round(old_seconds / result["seconds"], 2)}


def bench_disagreement(folder: Path, shape: tuple[int, int, int], device: str = "cpu") -> dict:
    """The cost of the disagreement output where it tells something: the default facies job's model (three U-Net
    members, configs/train_facies_unet.yaml) applied both ways, end to end, with outputs labels + confidence and
    then with disagreement as well, in turn over DISAGREEMENT_ROUNDS rounds (after a warm-up run); the ratio is
    the median of the rounds' plain / with-disagreement seconds (1.0: free)."""
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model = build_model("unet", 1, 6, (64, 64), {"base": 16, "depth": 4, "norm": "batch", "members": 3}).eval()
    kw = dict(kind="fcn", tile=shape[1:], overlap=0, orientation="both", device=device, resume=False)
    outputs = {"plain": ("labels", "confidence"), "with": ("labels", "confidence", "disagreement")}
    for chosen in outputs.values():  # a first run of each makes oneDNN's kernels (the members' own passes too)
        predict_volume(model, volume, out_dir=folder / "dis-warm", outputs=chosen, **kw)
    seconds: dict[str, list[float]] = {k: [] for k in outputs}
    for _ in range(DISAGREEMENT_ROUNDS):
        for name, chosen in outputs.items():
            seconds[name].append(predict_volume(model, volume, out_dir=folder / f"dis-{name}", outputs=chosen,
                                                **kw)["seconds"])
    voxels = int(np.prod(shape))
    return {"shape": list(shape), "model": "unet base 16 depth 4, 3 members, both orientations",
            "plain_vps": round(voxels / min(seconds["plain"])),
            "with_disagreement_vps": round(voxels / min(seconds["with"])),
            "ratio_with_vs_plain": paired_ratio(seconds["plain"], seconds["with"]),
            "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()}}


def bench_precision(folder: Path, shape: tuple[int, int, int], rounds: int, device: str = "cpu") -> dict:
    """What the default number format buys: the default facies job's model (three U-Net members, base 16, depth 4)
    applied both ways to a whole volume end to end in float32, then with precision 'auto' (bfloat16 where the device
    computes it natively), in turn over `rounds` rounds after a warm-up of each; the ratio is the median of the
    rounds' float32 / auto seconds, and `labels_agree` the share of voxels both label alike. The weights are
    random (no training here), so near-ties, and label flips, are more common than with a trained model: the
    accuracy of trained models in both formats is in docs/prediction.md, "Precision"."""
    volume = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    model = build_model("unet", 1, 6, (64, 64), {"base": 16, "depth": 4, "norm": "batch", "members": 3}).eval()
    kw = dict(kind="fcn", tile=shape[1:], overlap=0, orientation="both", device=device, resume=False,
              outputs=("labels", "confidence"))
    formats = ("float32", "auto")
    for precision in formats:
        predict_volume(model, volume[:2], out_dir=folder / "prec-warm", precision=precision, **kw)
    seconds: dict[str, list[float]] = {k: [] for k in formats}
    runs: dict[str, dict] = {}
    for _ in range(rounds):
        for precision in formats:
            runs[precision] = predict_volume(model, volume, out_dir=folder / f"prec-{precision}",
                                             precision=precision, **kw)
            seconds[precision].append(runs[precision]["seconds"])
    labels = [np.load(runs[p]["paths"]["labels"]) for p in formats]
    voxels = int(np.prod(shape))
    return {"shape": list(shape), "model": "unet base 16 depth 4, 3 members, both orientations",
            "auto_resolves_to": runs["auto"]["precision"],
            "float32_vps": round(voxels / min(seconds["float32"])), "auto_vps": round(voxels / min(seconds["auto"])),
            "speedup_auto_vs_float32": paired_ratio(seconds["float32"], seconds["auto"]),
            "labels_agree": round(float(np.mean(labels[0] == labels[1])), 4)}


def bench_patch(folder: Path, shape: tuple[int, int, int], crop: tuple[int, int], stride: int,
                device: str = "cpu") -> dict:
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model = build_model("patchcnn", 1, N_CLASSES, crop, {"filters": [8, 16]}).eval()
    grid = [len(range(0, n, stride)) for n in shape]
    crops = np.random.default_rng(2).normal(size=(grid[1] * grid[2], 1) + crop).astype(np.float32)
    runs, forwards = [], []
    ready, layout = prepared(model, torch.device(device), 2)  # the model as prediction runs it
    for _ in range(REPEATS):  # rounds of both, as for the unet
        runs.append(predict_volume(model, volume, kind="patch", crop=crop, stride=stride, out_dir=folder / "patch",
                                   device=device, resume=False))
        forwards.append(forward_only(ready, crops, runs[-1]["batch_size"], layout, device) * grid[0])
    result = min(runs, key=lambda r: r["seconds"])
    seconds = min(forwards)
    n = int(np.prod(grid))
    return {"shape": list(shape), "crops": n, "stride": stride, "batch_size": result["batch_size"],
            "end_to_end_crops_per_s": round(n / result["seconds"]), "forward_only_crops_per_s": round(n / seconds),
            "ratio_end_to_end_vs_forward": paired_ratio(forwards, [r["seconds"] for r in runs]),
            "ratio_best_vs_best": round(seconds / result["seconds"], 3)}


def paired_ratio(forward_s: list[float], end_to_end_s: list[float]) -> float:
    """Median over rounds of forward-only time / end-to-end time of the same round (this VM's speed drifts by
    tens of percent over seconds: a round's two runs, side by side in time, meet the same machine)."""
    return round(statistics.median(f / e for f, e in zip(forward_s, end_to_end_s)), 3)


def bench_stream(folder: Path, section: tuple[int, int], blocks: int, rounds: int = STREAM_ROUNDS,
                 threads: int | None = None) -> dict:
    """The same blocks applied in this process (StreamSession) and through a real daemon's session both ways a
    client on this machine can send them (client/stream.py): `direct` to the executor's direct endpoint, `relay`
    through the daemon. The sides take turns in runs of STREAM_RUN blocks sent back to back, as a host streams a
    volume (the order rotates); the first block of each run is applied but not counted: the OpenMP threads of the
    side that ran before spin for a while after it (GOMP's wait policy) and, on a 2-core machine, slow that block
    down by more than the trip costs. Figures per socket side: blocks/s, its ratio to in-process (and its spread
    over rounds), median latency and p90, and the median over blocks of (socket - in-process) for the same block:
    the cost of the trip."""
    from client import Stream
    from daemon.executor.predict.stream import StreamSession
    from tests.harness import RunningDaemon

    home = (folder / "home").resolve()
    model = build_model("unet", 1, N_CLASSES, (128, 128), UNET).eval()
    save_model_file(home / "models" / "bench.h5", model, unet_info((1,) + section))
    data = [np.random.default_rng(k).normal(size=(1,) + section).astype(np.float32) for k in range(blocks)]
    outputs = ["labels", "confidence"]
    session = StreamSession.open(home, {"model": "bench", "outputs": outputs})
    env = {}
    if threads:  # both sides alike: this process, and the executor (torch reads OMP_NUM_THREADS at import)
        torch.set_num_threads(threads)
        env["OMP_NUM_THREADS"] = str(threads)
    times: dict[str, list[float]] = {"in_process": [], "direct": [], "relay": []}
    per_round: dict[str, list[float]] = {"direct": [], "relay": []}
    with RunningDaemon(home, env=env) as d:
        streams = {"direct": Stream.open(d.client, "bench", outputs=outputs),
                   "relay": Stream.open(d.client, "bench", outputs=outputs, direct=False)}
        if streams["direct"].endpoint is None:
            raise SystemExit("the daemon offered no direct stream endpoint")
        sides = {"in_process": lambda b: session.apply([b]), "direct": streams["direct"].apply,
                 "relay": streams["relay"].apply}
        for _ in range(3):  # warm-up: every model touched, every allocator primed
            for apply in sides.values():
                apply(data[0])
        order = list(sides)
        for r in range(rounds):
            spent = dict.fromkeys(sides, 0.0)
            for c, first in enumerate(range(0, len(data), STREAM_RUN)):
                turn = (c + r) % len(order)
                for name in order[turn:] + order[:turn]:
                    sides[name](data[first])  # after the other sides' turn: not counted (see above)
                    for block in data[first + 1:first + STREAM_RUN]:
                        start = time.perf_counter()
                        sides[name](block)
                        ms = 1000 * (time.perf_counter() - start)
                        times[name].append(ms)
                        spent[name] += ms
            for name in per_round:
                per_round[name].append(spent["in_process"] / spent[name])
        same = all((streams["direct"].apply(b)[o] == streams["relay"].apply(b)[o]).all() for b in data[:3]
                   for o in outputs)
        for st in streams.values():
            st.close()
    n = len(times["in_process"])  # counted blocks per side
    local = times["in_process"]
    out: dict = {"block": [1, *section], "blocks": n, "rounds": rounds, "threads": torch.get_num_threads(),
                 "run": STREAM_RUN, "in_process_blocks_per_s": round(1000 * n / sum(local), 2),
                 "in_process_ms_median": round(statistics.median(local), 2), "outputs_equal": bool(same)}
    for name in ("direct", "relay"):
        ms = times[name]
        out[name] = {"blocks_per_s": round(1000 * n / sum(ms), 2),
                     "ratio_vs_in_process": round(sum(local) / sum(ms), 3),
                     "ratio_per_round_median": round(statistics.median(per_round[name]), 3),
                     "ratio_per_round_min_max": [round(min(per_round[name]), 3), round(max(per_round[name]), 3)],
                     "latency_ms_median": round(statistics.median(ms), 2),
                     "latency_ms_p90": round(statistics.quantiles(ms, n=10)[-1], 2),
                     "latency_ms_over_in_process_median_paired": round(
                         statistics.median([a - b for a, b in zip(ms, local)]), 2)}
    return out


def bench_executor_hop(folder: Path, messages: int = 300) -> dict:
    """How long a message an executor queues (Executor.send, as a job does with its reports) takes to reach the
    daemon's socket: the executor's I/O thread must notice it (it used to at its next 20 ms poll). Stream replies
    no longer take this hop: the stream thread sends them on its own socket."""
    import os

    import zmq

    from daemon.common import execproto as E
    from daemon.common.settings import load_settings
    from daemon.executor.process import Executor

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    endpoint = f"ipc://{folder}/hop.sock"
    router.bind(endpoint)
    # one_job: no stream socket (a long-lived executor says hello only after the daemon welcomed that one)
    ex = Executor("cpu", endpoint, folder, load_settings(folder, None), os.getppid(), one_job=True)
    ex.io_thread.start()
    router.recv_multipart()  # its hello
    hops = []
    for k in range(messages):
        time.sleep(0.003 + (k % 7) * 0.0013)  # at every phase of the I/O thread's poll
        start = time.perf_counter()
        ex.send(E.JobLog(job=1, level="info", message="x"))
        while E.decode(router.recv_multipart()[1], E.TO_DAEMON).TYPE != "log":
            pass
        hops.append(1000 * (time.perf_counter() - start))
    ex.stop.set()
    getattr(ex, "_wake", lambda: None)()  # (an executor from before the wake pipe stops at its next poll)
    ex.io_thread.join(2)
    router.close(0)
    return {"executor_to_daemon_ms_median": round(statistics.median(hops), 2),
            "executor_to_daemon_ms_p90": round(statistics.quantiles(hops, n=10)[-1], 2)}


def bench_opendtect(folder: Path, section: tuple[int, int], blocks: int) -> dict:
    """OpendTect's apply-server framing (docs/opendtect.md) against stream.apply, on one daemon, the same blocks."""
    from tests.daemon import odt_wire
    from tests.harness import RunningDaemon

    home = (folder / "odt-home").resolve()
    model = build_model("unet", 1, N_CLASSES, (128, 128), UNET).eval()
    save_model_file(home / "models" / "bench.h5", model, unet_info((1,) + section))
    data = [np.random.default_rng(k).normal(size=(1,) + section).astype(np.float32) for k in range(blocks)]
    figures: dict[str, list[float]] = {"stream": [], "opendtect": []}
    with RunningDaemon(home, env={"SEISD_OPENDTECT__ENABLED": "true"}) as d:
        address = d.client.status()["endpoints"]["opendtect"]
        reply, _ = odt_wire.request_json(address, {"action": "parameters", "model": "bench",
                                                   "names": ["Facies", "Confidence"]})
        sid = d.client.call("stream.open", model="bench", outputs=["labels", "confidence"])["session"]
        same = True
        for rnd in range(2):  # the first round warms both sessions up and is not counted
            for block in data:
                start = time.perf_counter()
                _, want = d.client.call_arrays("stream.apply", [block], session=sid, timeout=60)
                mid = time.perf_counter()
                got = odt_wire.apply(address, [block[None]])   # [nattribs, inline, crossline, z]
                end = time.perf_counter()
                if rnd:
                    figures["stream"].append(mid - start)
                    figures["opendtect"].append(end - mid)
                same = same and all(np.array_equal(g[0], w) for g, w in zip(got, want))
        d.client.call("stream.close", session=sid)
        odt_wire.request_json(address, {"action": "kill"})

    def summary(lat: list[float]) -> dict:
        return {"blocks_per_s": round(len(lat) / sum(lat), 2), "latency_ms_median": round(
            1000 * statistics.median(lat), 1), "latency_ms_max": round(1000 * max(lat), 1)}

    return {"block": [1, 1, *section], "blocks": blocks, "outputs_equal": same, "endpoint": address.split(":")[0],
            "stream": summary(figures["stream"]), "opendtect": summary(figures["opendtect"]),
            "ratio_opendtect_vs_stream": round(sum(figures["stream"]) / sum(figures["opendtect"]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="bigger volumes and more blocks (a few minutes)")
    parser.add_argument("--skip-stream", action="store_true", help="no daemon: whole-volume figures only")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] for the whole-volume figures (the stream "
                        "figure runs on the daemon's CPU slot)")
    parser.add_argument("--stream-only", action="store_true", help="the stream figures only")
    parser.add_argument("--stream-threads", type=int, help="torch threads of both stream sides (default: all cores; "
                        "1 is steadier on a loaded machine)")
    args = parser.parse_args()
    malloc.tune()  # as in the executor that runs predict jobs (daemon/common/malloc.py)
    scale = 4 if args.long else 1
    torch.manual_seed(0)
    out = {"bench": "predict", "device": args.device, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.stream_only:
            out["unet"] = bench_unet(folder, (16 * scale, 256, 256), args.device)
            out["patchcnn"] = bench_patch(folder, (4 * scale, 64, 96), (33, 33), 2, args.device)
            out["disagreement"] = bench_disagreement(folder, (16 * scale, 32, 128), args.device)
            out["precision"] = bench_precision(folder, (64, 64 * scale, 128), 3 * scale, args.device)
        if not args.skip_stream:
            out["stream"] = bench_stream(folder, (256, 256), 20 * scale, threads=args.stream_threads)
            out["stream"]["hop"] = bench_executor_hop(folder)
            out["opendtect"] = bench_opendtect(folder, (256, 256), 20 * scale)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
