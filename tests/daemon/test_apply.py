"""predict_volume and apply_block with small models whose answers are computed here by hand."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from daemon.executor.predict.apply import PredictError, apply_block, auto_batch_size, predict_volume
from daemon.executor.predict.outputs import load_outputs

SHAPE = (9, 23, 31)
MEANS_STDS = [(0.5, 2.0), (-1.0, 0.5)]


@pytest.fixture(scope="module")
def volumes() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.normal(size=SHAPE) * s + m).astype(np.float32) for m, s in MEANS_STDS]


def pointwise(rank: int, n_in: int = 2, n_classes: int = 4) -> torch.nn.Module:
    """A 1x1 convolution: its output at a voxel depends only on that voxel, so blending must be exact."""
    torch.manual_seed(3)
    return (torch.nn.Conv2d if rank == 2 else torch.nn.Conv3d)(n_in, n_classes, 1)


def expected_probs(model: torch.nn.Module, volumes: list[np.ndarray]) -> np.ndarray:
    """Softmax of the 1x1 conv applied voxel by voxel to the normalised volumes: [n_classes, ni, nx, ns]."""
    x = np.stack([(v - m) / s for v, (m, s) in zip(volumes, MEANS_STDS)]).reshape(len(volumes), -1)
    w = model.weight.detach().numpy().reshape(model.out_channels, -1)
    logits = w @ x + model.bias.detach().numpy()[:, None]
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).reshape((-1,) + SHAPE)


class CentreVoxel(torch.nn.Module):
    """A patch classifier that looks only at the crop's centre voxel through a pointwise layer."""

    def __init__(self, pointwise_conv: torch.nn.Module) -> None:
        super().__init__()
        self.conv = pointwise_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[(...,) + tuple(n // 2 for n in x.shape[2:])]
        return self.conv(centre[(...,) + (None,) * (x.dim() - 2)]).flatten(1)


@pytest.mark.parametrize("tile, overlap, orientation", [
    ((16, 24), 6, "inline"), ((6, 16), (2, 4), "crossline"), ((8, 20), 3, "both"),
    ((4, 16, 16), (1, 4, 4), "inline"), ((32, 64), 8, "inline")])
def test_fcn_tiles_blend_to_the_pointwise_answer(tmp_path, volumes, tile, overlap, orientation) -> None:
    model = pointwise(len(tile))
    result = predict_volume(model, volumes, out_dir=tmp_path, tile=tile, overlap=overlap,
                            orientation=orientation, normalisation=MEANS_STDS, chunk_inlines=4, batch_size=3,
                            device="cpu")
    assert result["status"] == "complete" and result["n_chunks"] == 3 and result["n_classes"] == 4
    out = load_outputs(result)
    ref = expected_probs(model, volumes)
    np.testing.assert_allclose(out["probabilities"], ref, atol=2e-6)
    top2 = np.sort(ref, axis=0)[-2:]
    np.testing.assert_allclose(out["confidence"], top2[1] - top2[0], atol=4e-6)
    clear = (top2[1] - top2[0]) > 1e-4          # ties can go either way
    assert np.array_equal(out["labels"][clear], ref.argmax(0)[clear])
    assert out["labels"].dtype == np.uint8


def _with_context(volumes: list[np.ndarray], axis: int, c: int) -> list[np.ndarray]:
    """Per volume, the volume shifted by -c..c sections along `axis`, mirrored at the ends (np.pad symmetric)."""
    out = []
    n = SHAPE[axis]
    for v in volumes:
        padded = np.pad(v, [(c, c) if a == axis else (0, 0) for a in range(3)], mode="symmetric")
        out += [np.take(padded, np.arange(n) + c + d, axis=axis) for d in range(-c, c + 1)]
    return out


@pytest.mark.parametrize("orientation", ["inline", "crossline", "both"])
def test_context_sections_are_channels_in_the_order_of_the_training_crops(tmp_path, volumes, orientation) -> None:
    """With context 2 a 1x1 convolution over 2 volumes x 5 sections sees, at each voxel, the voxels 2 below to 2
    above along the section's normal (inlines for inline sections, crosslines for crossline ones), volume by
    volume, as workers/sampling.py stacks a crop's context channels; past the volume's ends mirrored."""
    torch.manual_seed(4)
    model = torch.nn.Conv2d(10, 4, 1)
    result = predict_volume(model, volumes, out_dir=tmp_path, tile=(32, 32), overlap=0, orientation=orientation,
                            normalisation=MEANS_STDS, chunk_inlines=4, device="cpu", context=2)
    got = load_outputs(result)["probabilities"]
    stats = [p for p in MEANS_STDS for _ in range(5)]

    def way(axis: int) -> np.ndarray:
        channels = _with_context(volumes, axis, 2)
        x = np.stack([(v - m) / s for v, (m, s) in zip(channels, stats)]).reshape(10, -1)
        logits = model.weight.detach().numpy().reshape(4, 10) @ x + model.bias.detach().numpy()[:, None]
        e = np.exp(logits - logits.max(0))
        return (e / e.sum(0)).reshape((4,) + SHAPE)
    want = {"inline": way(0), "crossline": way(1)}
    want["both"] = (want["inline"] + want["crossline"]) / 2
    assert np.abs(want["inline"] - want["crossline"]).max() > 0.05  # the two normals differ: the test means it
    np.testing.assert_allclose(got, want[orientation], atol=2e-6)


def test_context_is_refused_where_it_has_no_meaning(volumes) -> None:
    with pytest.raises(PredictError, match="2D fully convolutional"):
        apply_block(torch.nn.Conv3d(6, 4, 1), volumes, tile=(4, 8, 8), normalisation=MEANS_STDS, context=1,
                    device="cpu")
    with pytest.raises(PredictError, match="2D fully convolutional"):
        apply_block(torch.nn.Conv2d(6, 4, 1), volumes, kind="patch", crop=(5, 5), normalisation=MEANS_STDS,
                    context=1, device="cpu")


def test_both_orientations_average_the_inline_and_crossline_answers(tmp_path, volumes) -> None:
    """A 3x3 convolution sees different neighbours in inline and crossline sections, so the two orientations give
    different answers and "both" must be their mean at every voxel (each voxel lies under two whole-section tiles,
    while one orientation alone covers it once and copies its tile into place)."""
    torch.manual_seed(5)
    model = torch.nn.Conv2d(2, 4, 3, padding=1)
    runs = {o: load_outputs(predict_volume(model, volumes, out_dir=tmp_path / o, tile=(32, 32), overlap=0,
                                           orientation=o, normalisation=MEANS_STDS, chunk_inlines=4,
                                           device="cpu"))["probabilities"]
            for o in ("inline", "crossline", "both")}
    assert np.abs(runs["inline"] - runs["crossline"]).max() > 0.05  # the test means something
    np.testing.assert_allclose(runs["both"], (runs["inline"] + runs["crossline"]) / 2, atol=2e-6)


def _bald(views: list[np.ndarray]) -> np.ndarray:
    """Disagreement of probability volumes [n_classes, ...] computed here: entropy of their mean minus their mean
    entropy, over log(n_classes)."""
    h = lambda p: -(p * np.log(np.clip(p, 1e-12, None))).sum(0)  # noqa: E731
    return (h(np.mean(views, axis=0)) - np.mean([h(v) for v in views], axis=0)) / np.log(views[0].shape[0])


def test_disagreement_is_the_mutual_information_of_the_members_and_orientations(tmp_path, volumes) -> None:
    """An ensemble of two different 3x3 convolutions, applied both ways on whole sections: four views per voxel
    (two members x two orientations). Each member applied alone in each orientation gives the views' probabilities;
    the disagreement output must be their mutual information, and the other outputs those of a run without it."""
    from daemon.executor.models.ensemble import Ensemble

    seeds = iter([11, 12])

    def member() -> torch.nn.Module:
        torch.manual_seed(next(seeds))
        return torch.nn.Conv2d(2, 4, 3, padding=1)

    model = Ensemble(member, 2)
    kw = dict(tile=(32, 32), overlap=0, normalisation=MEANS_STDS, chunk_inlines=4, device="cpu")
    views = [load_outputs(predict_volume(m, volumes, out_dir=tmp_path / f"m{k}{o}", orientation=o, **kw))
             ["probabilities"] for k, m in enumerate(model.members) for o in ("inline", "crossline")]
    with_it = load_outputs(predict_volume(model, volumes, out_dir=tmp_path / "with", orientation="both",
                                          outputs=["labels", "probabilities", "confidence", "disagreement"], **kw))
    without = load_outputs(predict_volume(model, volumes, out_dir=tmp_path / "without", orientation="both",
                                          outputs=["labels", "probabilities", "confidence"], **kw))
    expected = _bald([np.asarray(v) for v in views])
    assert expected.mean() > 0.01 and expected.std() > 0.005  # the views do disagree, by varying amounts
    np.testing.assert_allclose(with_it["disagreement"], expected, atol=2e-5)
    np.testing.assert_allclose(with_it["probabilities"], without["probabilities"], atol=1e-6)
    np.testing.assert_allclose(with_it["confidence"], without["confidence"], atol=2e-6)
    assert np.array_equal(with_it["labels"], without["labels"])
    single = apply_block(model.members[0], volumes, outputs=["disagreement"], orientation="inline", **kw)
    assert single["disagreement"].max() < 1e-5  # one view: nothing to disagree with


def test_split_runs_each_member_along_one_orientation(tmp_path, volumes) -> None:
    """orientation "split": a three-member ensemble's first two members along inlines (their probabilities
    averaged), the third along crosslines, the two orientations averaged; a single model is refused by name."""
    from daemon.executor.models.ensemble import Ensemble

    seeds = iter([21, 22, 23])

    def member() -> torch.nn.Module:
        torch.manual_seed(next(seeds))
        return torch.nn.Conv2d(2, 4, 3, padding=1)

    model = Ensemble(member, 3)
    kw = dict(tile=(32, 32), overlap=0, normalisation=MEANS_STDS, chunk_inlines=4, batch_size=3, device="cpu")
    alone = {(k, o): load_outputs(predict_volume(m, volumes, out_dir=tmp_path / f"m{k}{o}", orientation=o, **kw))
             ["probabilities"] for k, m in enumerate(model.members) for o in ("inline", "crossline")}
    split = load_outputs(predict_volume(model, volumes, out_dir=tmp_path / "split", orientation="split",
                                        outputs=["labels", "probabilities", "disagreement"], **kw))
    expected = ((alone[0, "inline"] + alone[1, "inline"]) / 2 + alone[2, "crossline"]) / 2
    both = (sum(alone.values())) / 6
    assert np.abs(expected - both).max() > 0.02  # the members and orientations do differ
    np.testing.assert_allclose(split["probabilities"], expected, atol=2e-6)
    views = [alone[0, "inline"], alone[1, "inline"], alone[2, "crossline"], alone[2, "crossline"]]
    np.testing.assert_allclose(split["disagreement"], _bald([np.asarray(v) for v in views]), atol=2e-5)
    block = apply_block(model, volumes, orientation="split", outputs=["probabilities"], **kw)
    np.testing.assert_allclose(block["probabilities"], expected, atol=2e-6)
    with pytest.raises(PredictError, match="one member: use 'both'"):
        predict_volume(model.members[0], volumes, out_dir=tmp_path / "single", orientation="split", **kw)
    deep = Ensemble(lambda: torch.nn.Conv3d(2, 4, 1), 2)
    with pytest.raises(PredictError, match="a 3D model has no slab orientation"):
        apply_block(deep, volumes, orientation="split", tile=(4, 8, 8), normalisation=MEANS_STDS, device="cpu")


def test_split_runs_a_patch_ensembles_members_one_way_each(volumes) -> None:
    from daemon.executor.models.ensemble import Ensemble

    torch.manual_seed(31)
    model = Ensemble(lambda: CentreVoxel(torch.nn.Conv2d(1, 4, 1)), 2)  # two draws: two different members
    kw = dict(kind="patch", crop=(5, 5), normalisation=MEANS_STDS[0], device="cpu", outputs=["probabilities"])
    one = {(k, o): apply_block(m, volumes[0], orientation=o, **kw)["probabilities"]
           for k, m in enumerate(model.members) for o in ("inline", "crossline")}
    split = apply_block(model, volumes[0], orientation="split", **kw)["probabilities"]
    assert np.abs(one[0, "inline"] - one[1, "crossline"]).max() > 0.02
    np.testing.assert_allclose(split, (one[0, "inline"] + one[1, "crossline"]) / 2, atol=2e-6)


def test_progress_within_a_chunk_counts_forward_passes(volumes) -> None:
    """With split, each of the 9 inline sections runs two members of three and each of the 23 crossline sections
    one: the inline batches are 18 of the chunk's 41 passes, where counting batches (3 of 11) made the ETA of a
    split prediction wrong by up to two times. A patch ensemble's inline crops run one member of two: half."""
    from daemon.executor.models.ensemble import Ensemble
    from daemon.executor.predict.engine import _engine

    model = Ensemble(lambda: torch.nn.Conv2d(2, 4, 3, padding=1), 3)
    engine = _engine(model, volumes, "cpu", "fcn", MEANS_STDS, (32, 32), 0, "split", None, 1)
    engine.batch_size, seen = 3, []
    engine.on_batch = seen.append
    engine.chunk(0, SHAPE[0])
    assert len(seen) == 3 + 8 and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert seen[2] == pytest.approx(18 / 41)  # the last batch of inlines
    patch = Ensemble(lambda: CentreVoxel(torch.nn.Conv2d(1, 4, 1)), 2)
    engine = _engine(patch, volumes[:1], "cpu", "patch", MEANS_STDS[0], None, None, "split", (5, 5), 1)
    engine.batch_size, seen = 10 ** 6, []
    engine.on_batch = seen.append
    engine.chunk(0, 2)
    assert seen == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("crop, orientation", [((7, 9), "inline"), ((6, 8), "crossline"), ((5, 5), "both"),
                                               ((3, 5, 4), "inline")])
def test_patch_crops_on_every_voxel_give_the_pointwise_answer(volumes, crop, orientation) -> None:
    model = CentreVoxel(pointwise(len(crop)))
    out = apply_block(model, volumes, kind="patch", crop=crop, orientation=orientation, normalisation=MEANS_STDS,
                      chunk_inlines=4, batch_size=100, device="cpu")
    np.testing.assert_allclose(out["probabilities"], expected_probs(model.conv, volumes), atol=2e-6)


def test_patch_stride_fills_from_the_nearest_computed_voxel(volumes) -> None:
    model = CentreVoxel(pointwise(2))
    out = apply_block(model, volumes, kind="patch", crop=(5, 7), stride=3, normalisation=MEANS_STDS,
                      outputs=["probabilities"], chunk_inlines=4, device="cpu")
    ref = expected_probs(model.conv, volumes)
    near = [np.minimum((np.arange(n) + 1) // 3 * 3, (n - 1) // 3 * 3) for n in SHAPE]
    np.testing.assert_allclose(out["probabilities"], ref[:, near[0]][:, :, near[1]][:, :, :, near[2]], atol=2e-6)
    assert set(out) == {"probabilities"}


def context_model() -> torch.nn.Module:
    """A 3x3 FCN with random weights: real spatial context, so tiles and blending matter."""
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 3, 3, padding=1))


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, volumes) -> None:
    opts = dict(tile=(12, 16), overlap=4, orientation="both", normalisation=MEANS_STDS[0], chunk_inlines=2,
                batch_size=4, device="cpu")
    whole = predict_volume(context_model(), volumes[0], out_dir=tmp_path / "whole", **opts)
    calls = iter(range(10_000))
    stopped = predict_volume(context_model(), volumes[0], out_dir=tmp_path / "resumed",
                             should_stop=lambda: next(calls) >= 25, **opts)
    assert stopped["status"] == "stopped" and 0 < stopped["chunks_done"] < stopped["n_chunks"]
    record = json.loads((tmp_path / "resumed" / "progress.json").read_text())
    assert record["state"]["chunks_done"] == stopped["chunks_done"]
    resumed = predict_volume(context_model(), volumes[0], out_dir=tmp_path / "resumed", **opts)
    assert resumed["status"] == "complete" and resumed["resumed_from_chunk"] == stopped["chunks_done"]
    a, b = load_outputs(whole), load_outputs(resumed)
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_resume_with_other_weights_is_refused(tmp_path, volumes) -> None:
    opts = dict(tile=(12, 16), normalisation=MEANS_STDS[0], chunk_inlines=3, device="cpu")
    predict_volume(context_model(), volumes[0], out_dir=tmp_path, should_stop=lambda: True, **opts)
    other = context_model()
    with torch.no_grad():
        other[0].bias.add_(1.0)
    with pytest.raises(PredictError, match="other settings or weights"):
        predict_volume(other, volumes[0], out_dir=tmp_path, **opts)
    fresh = predict_volume(other, volumes[0], out_dir=tmp_path, resume=False, **opts)
    assert fresh["status"] == "complete" and fresh["resumed_from_chunk"] == 0


def test_apply_block_equals_the_whole_volume_job(tmp_path, volumes) -> None:
    opts = dict(tile=(12, 16), overlap=4, normalisation=MEANS_STDS[0], device="cpu")
    job = load_outputs(predict_volume(context_model(), volumes[0], out_dir=tmp_path, **opts))
    training = context_model().train()  # a model being trained, previewed between epochs
    block = apply_block(training, np.array(volumes[0]), **opts)
    np.testing.assert_allclose(block["probabilities"], job["probabilities"], atol=1e-6)
    np.testing.assert_allclose(block["confidence"], job["confidence"], atol=1e-6)
    # apply ran a prediction copy: the caller's model keeps its mode and layout
    assert training.training and all(p.is_contiguous() for p in training.parameters())


def test_progress_reports_rising_fractions_up_to_one_with_an_eta(tmp_path, volumes) -> None:
    seen: list[tuple[float, float | None, str]] = []
    predict_volume(context_model(), volumes[0], out_dir=tmp_path, tile=(12, 16), chunk_inlines=3, device="cpu",
                   progress=lambda f, eta, msg: seen.append((f, eta, msg)))
    fractions = [f for f, _, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert all(eta is not None and eta >= 0 for _, eta, _ in seen)
    assert "chunk 3/3" in seen[-1][2]


@pytest.mark.parametrize("orientation", ["inline", "both"])
def test_bfloat16_gives_the_float32_answer_within_its_rounding(tmp_path, volumes, orientation) -> None:
    """bfloat16 keeps 8 bits of mantissa: the probabilities move by a few thousandths, labels only at near-ties."""
    model = pointwise(2)
    result = predict_volume(model, volumes, out_dir=tmp_path, tile=(8, 20), overlap=3, orientation=orientation,
                            normalisation=MEANS_STDS, device="cpu", precision="bfloat16")
    assert result["precision"] == "bfloat16"
    out, ref = load_outputs(result), expected_probs(model, volumes)
    assert np.abs(out["probabilities"] - ref).max() < 0.02
    assert np.abs(out["probabilities"] - ref).max() > 1e-6  # it did run in bfloat16: float32 is exact to 2e-6
    top2 = np.sort(ref, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 0.05
    assert np.array_equal(out["labels"][clear], ref.argmax(0)[clear])


def test_auto_precision_is_bfloat16_only_where_the_device_computes_it() -> None:
    from daemon.executor.predict.spec import native_bfloat16, resolve_precision
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == "float32" and resolve_precision("bfloat16", cpu) == "bfloat16"
    flags = open("/proc/cpuinfo").read().split() if Path("/proc/cpuinfo").exists() else []
    assert native_bfloat16(cpu) == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert resolve_precision("auto", cpu) == ("bfloat16" if native_bfloat16(cpu) else "float32")
    with pytest.raises(PredictError, match="precision must be one of auto, float32, bfloat16, got 'half'"):
        resolve_precision("half", cpu)


def test_auto_batch_size_is_positive_and_capped() -> None:
    assert 1 <= auto_batch_size("fcn", torch.device("cpu"), 128 * 128, 1) <= 8
    assert auto_batch_size("fcn", torch.device("cpu"), 10 ** 12, 1) == 1
    assert 1 <= auto_batch_size("patch", torch.device("cpu"), 65 * 65, 1) <= 256


@pytest.mark.parametrize("kwargs, words", [
    (dict(kind="tiles", tile=(8, 8)), "kind must be"),
    (dict(kind="fcn"), "needs tile"),
    (dict(kind="patch", crop=(5,)), "needs crop"),
    (dict(kind="patch", crop=(5, 5), stride=0), "stride"),
    (dict(tile=(8, 8), normalisation=[(0, 1), (0, 1)]), "one \\(mean, std\\) per input volume"),
    (dict(tile=(8, 8), normalisation=(0, 0)), "std"),
    (dict(tile=(8, 8), outputs=["labels", "entropy"]), "outputs must be"),
    (dict(tile=(8, 8), batch_size=0), "batch_size"),
])
def test_bad_options_are_refused_with_the_reason(volumes, kwargs, words) -> None:
    with pytest.raises(PredictError, match=words):
        apply_block(context_model(), volumes[0], device="cpu", **kwargs)


def test_a_model_of_the_wrong_kind_is_named(volumes) -> None:
    with pytest.raises(PredictError, match="check kind"):
        apply_block(context_model(), volumes[0], kind="patch", crop=(5, 5), device="cpu")
    with pytest.raises(PredictError, match=">= 2 classes"):
        apply_block(torch.nn.Conv2d(1, 1, 1), volumes[0], tile=(8, 8), device="cpu")


def test_known_class_count_skips_the_probe_and_is_checked(tmp_path, volumes) -> None:
    opts = dict(tile=(12, 16), overlap=4, normalisation=MEANS_STDS[0], device="cpu")
    probed = load_outputs(predict_volume(context_model(), volumes[0], out_dir=tmp_path / "a", **opts))
    n = probed["probabilities"].shape[0]
    told = predict_volume(context_model(), volumes[0], out_dir=tmp_path / "b", n_classes=n, **opts)
    np.testing.assert_array_equal(load_outputs(told)["labels"], probed["labels"])
    with pytest.raises(PredictError, match="its file names 7 classes"):
        predict_volume(context_model(), volumes[0], out_dir=tmp_path / "c", n_classes=7, **opts)


def test_real_f3_crop_through_the_survey_cache(tmp_path, shared_data) -> None:
    """The F3 crop imported with workers.segy_import, predicted whole, with the survey's own statistics."""
    from workers.segy_import import import_segy
    survey = import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "f3")
    stats = survey.stats("seismic")
    result = predict_volume(context_model(), survey.volume("seismic"), out_dir=tmp_path / "pred", tile=(16, 32),
                            normalisation=(stats["mean"], stats["std"]), chunk_inlines=8, device="cpu")
    out = load_outputs(result)
    assert out["labels"].shape == tuple(survey.shape) == (23, 18, 75)
    np.testing.assert_allclose(out["probabilities"].sum(0), 1.0, atol=1e-5)
    assert np.all(out["confidence"] >= 0) and np.all(out["confidence"] <= 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_gives_the_cpu_answer(volumes) -> None:
    opts = dict(tile=(12, 16), overlap=4, normalisation=MEANS_STDS[0])
    cpu = apply_block(context_model(), volumes[0], device="cpu", **opts)
    gpu = apply_block(context_model(), volumes[0], device="cuda", **opts)
    np.testing.assert_allclose(gpu["probabilities"], cpu["probabilities"], atol=1e-4)
