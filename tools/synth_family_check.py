#!/usr/bin/env python3
"""Is the varied family (tools/synth_varied.py) what docs/synth.md says? Drawn ranges, baselines and separability
over a range of seeds.

    python tools/synth_family_check.py [--seeds 16] [--first-seed 1] [--shape 128 128 96] [--ceiling-steps 400]
                                      [--unet-seconds 480]

Per seed: classes, faults, pick coverage, noise, wavelet, the depth-only and amplitude-only baselines (both must
stay low: depth alone must not name the class) and, with --ceiling-steps S > 0, the separability check: a small
MLP on local texture features (energy, derivative energies, dips at three scales; no depth) trained for S steps
on the TRUE labels of 8 whole inlines spread over the survey, then applied to every voxel and scored over the cube.
A high score there says the classes can be told apart from the seismic; as a simple classifier it is a floor on
what is possible, not a ceiling. Prints a table and one JSON
line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
import synth  # noqa: E402

TRUTH_INLINES = 8


def _box(a: np.ndarray, w: int, axis: int) -> np.ndarray:
    """Moving average of odd width w along one axis (edges repeated), by cumulative sums."""
    if w <= 1:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (w // 2 + 1, w // 2)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    return ((np.take(c, np.arange(w, w + n), axis) - np.take(c, np.arange(n), axis)) / w).astype(np.float32)


def _smooth(a: np.ndarray, win: tuple[int, int, int]) -> np.ndarray:
    for axis, w in enumerate(win):
        a = _box(a, w, axis)
    return a


def texture_features(x: np.ndarray) -> np.ndarray:
    """Per-voxel texture features [il, xl, ns, F] at three scales: local mean, log energy of the trace and of its
    derivatives along each axis (continuity, frequency), and the two local dips (structure tensor terms)."""
    d = [np.gradient(x, axis=a).astype(np.float32) for a in range(3)]
    dzz = np.gradient(d[2], axis=2).astype(np.float32)
    feats = []
    for win in ((3, 3, 5), (7, 7, 11), (13, 13, 21)):
        ez = _smooth(d[2] ** 2, win) + 1e-6
        feats += [_smooth(x, win), np.log(_smooth(x ** 2, win) + 1e-6), np.log(ez),
                  np.log(_smooth(d[0] ** 2, win) + 1e-6), np.log(_smooth(d[1] ** 2, win) + 1e-6),
                  np.log(_smooth(dzz ** 2, win) + 1e-6),
                  _smooth(d[0] * d[2], win) / ez, _smooth(d[1] * d[2], win) / ez]
    return np.stack(feats, axis=-1)


def ceiling(survey: synth.SynthSurvey, steps: int, seed: int) -> dict[str, float]:
    """Pixel and mean class accuracy over the cube of a small MLP on local texture features, trained on the true
    labels of 8 whole inlines (depth is not a feature: it must be the texture that tells the classes apart)."""
    import torch

    torch.manual_seed(seed)
    nil = survey.labels.shape[0]
    n_cls = len(survey.class_names)
    x = ((survey.seismic - survey.seismic.mean()) / (survey.seismic.std() + 1e-9)).astype(np.float32)
    f = texture_features(x)
    mu, sd = f.reshape(-1, f.shape[-1]).mean(0), f.reshape(-1, f.shape[-1]).std(0) + 1e-6
    f = (f - mu) / sd
    rows = np.linspace(4, nil - 5, TRUTH_INLINES).round().astype(int)
    xs = torch.from_numpy(f[rows].reshape(-1, f.shape[-1]))
    ys = torch.from_numpy(survey.labels[rows].reshape(-1).astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Linear(f.shape[-1], 96), torch.nn.ReLU(), torch.nn.Linear(96, 96),
                                torch.nn.ReLU(), torch.nn.Linear(96, n_cls))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    t0 = time.monotonic()
    for _ in range(steps):
        idx = torch.randint(0, len(ys), (2048,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = np.concatenate([model(torch.from_numpy(f[i].reshape(-1, f.shape[-1]))).argmax(1).numpy()
                               for i in range(nil)]).reshape(survey.labels.shape)
    recall = [float(np.mean(pred[survey.labels == c] == c)) for c in range(n_cls)]
    return {"truth8_pixel": float(np.mean(pred == survey.labels)), "truth8_mean_class": float(np.mean(recall)),
            "truth8_train_s": round(time.monotonic() - t0, 1)}


def unet_ceiling(survey: synth.SynthSurvey, seconds: float) -> dict[str, float]:
    """The stronger separability check: a 2-D U-Net (base 16, depth 3, no augmentation) trained for `seconds` on
    the true labels of 8 whole inlines (4 per step, AdamW 3e-3), applied to every inline, scored over the cube."""
    import torch
    from daemon.executor.models import build_model

    torch.manual_seed(0)
    nil, nxl, ns = survey.labels.shape
    n = len(survey.class_names)
    x = ((survey.seismic - survey.seismic.mean()) / survey.seismic.std()).astype(np.float32)
    rows = np.linspace(4, nil - 5, TRUTH_INLINES).round().astype(int)
    model = build_model("unet", 1, n, (nxl, ns), {"base": 16, "depth": 3})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xs = torch.from_numpy(np.ascontiguousarray(x[rows][:, None]))
    ys = torch.from_numpy(survey.labels[rows].astype(np.int64))
    rng = np.random.default_rng(0)
    t0, steps = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        k = rng.choice(len(rows), 4, replace=False)
        loss = torch.nn.functional.cross_entropy(model(xs[k]), ys[k])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    pred = np.empty_like(survey.labels)
    with torch.no_grad():
        for i in range(0, nil, 8):
            pred[i:i + 8] = model(torch.from_numpy(np.ascontiguousarray(x[i:i + 8][:, None]))).argmax(1).numpy()
    recall = [float(np.mean(pred[survey.labels == c] == c)) for c in range(n)]
    return {"unet8_pixel": float(np.mean(pred == survey.labels)), "unet8_mean_class": float(np.mean(recall)),
            "unet8_steps": steps}


def check_seed(shape: tuple[int, int, int], seed: int, ceiling_steps: int, unet_seconds: float = 0.0) -> dict:
    t0 = time.monotonic()
    s = synth.generate(shape, seed=seed, family="varied")
    m = s.meta
    row = {"seed": seed, "classes": m["classes"], "faults": len(m["faults"]), "coverage": m["coverage"],
           "noise": m["noise"], "peak_hz": m["peak_hz"], "phase_deg": m["phase_deg"],
           "looks": sum(len(v) for v in m["looks"].values()), "generate_s": round(time.monotonic() - t0, 1),
           "depth_only": round(synth.depth_only_baseline(s.labels, s.picks), 3),
           "amplitude_only": round(synth.amplitude_only_baseline(s.seismic, s.labels, s.picks), 3)}
    if ceiling_steps > 0:
        row.update({k: round(v, 3) for k, v in ceiling(s, ceiling_steps, seed).items()})
    if unet_seconds > 0:
        row.update({k: round(v, 3) for k, v in unet_ceiling(s, unet_seconds).items()})
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--shape", type=int, nargs=3, default=(128, 128, 96))
    ap.add_argument("--ceiling-steps", type=int, default=0,
                    help="train the truth-of-8-inlines classifier this many steps of 2048 voxels per seed (0: skip "
                    "the separability check)")
    ap.add_argument("--unet-seconds", type=float, default=0.0,
                    help="also train a U-Net on the truth of 8 inlines for this many seconds per seed (slow on CPU)")
    args = ap.parse_args(argv)
    rows = []
    cols = ["seed", "classes", "faults", "coverage", "noise", "peak_hz", "phase_deg", "looks", "depth_only",
            "amplitude_only", "truth8_pixel", "truth8_mean_class", "unet8_pixel", "unet8_mean_class"]
    print(" ".join(f"{c:>16}" if c.startswith(("truth", "unet")) else f"{c:>9}" for c in cols))
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        row = check_seed(tuple(args.shape), seed, args.ceiling_steps, args.unet_seconds)
        rows.append(row)
        print(" ".join(f"{row.get(c, '-'):>16}" if c.startswith(("truth", "unet")) else f"{row.get(c, '-'):>9}"
                       for c in cols), flush=True)
    summary = {"check": "synth_family_check", "shape": list(args.shape), "seeds": [r["seed"] for r in rows],
               "ceiling_steps": args.ceiling_steps,
               "depth_only_max": max(r["depth_only"] for r in rows),
               "amplitude_only_max": max(r["amplitude_only"] for r in rows),
               "classes_seen": sorted({r["classes"] for r in rows}),
               "faults_seen": sorted({r["faults"] for r in rows}),
               "coverage_range": [min(r["coverage"] for r in rows), max(r["coverage"] for r in rows)]}
    if args.ceiling_steps > 0:
        for k in ("truth8_pixel", "truth8_mean_class"):
            summary[k + "_mean"] = round(float(np.mean([r[k] for r in rows])), 3)
            summary[k + "_min"] = min(r[k] for r in rows)
    print(json.dumps({**summary, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
