"""extract_crop against an independent reference built by zero-padding the whole volume."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.crops import CropError, CropSpec, CropWindows, extract_crop, extract_crops


def _reference(volume: np.ndarray, center: tuple[int, int, int], spec: CropSpec) -> np.ndarray:
    """Pad every axis by the largest size, then cut the window: slow but obviously right."""
    pad = max(spec.size) + 1
    padded = np.pad(volume.astype(np.float32), pad)
    full = {"inline": (1, spec.size[0], spec.size[1]), "crossline": (spec.size[0], 1, spec.size[1]),
            "time": (spec.size[0], spec.size[1], 1), "3d": spec.size}[spec.orientation]
    starts = [c - s // 2 + pad for c, s in zip(center, full)]  # size 1 on the fixed axis: just c
    block = padded[tuple(slice(st, st + s) for st, s in zip(starts, full))]
    return block.reshape(spec.out_shape())


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 9, 11)).astype(np.float32)


SPECS = [CropSpec((4, 5), "inline"), CropSpec((3, 6), "crossline"), CropSpec((5, 4), "time"),
         CropSpec((4, 3, 5), "3d"), CropSpec((1, 1), "inline"), CropSpec((2, 2, 2), "3d")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.orientation}-{'x'.join(map(str, s.size))}")
def test_every_centre_matches_padded_reference(volume: np.ndarray, spec: CropSpec) -> None:
    # Every centre in and just around the volume, so all edges and corners are hit.
    for center in itertools.product(range(-1, 8), range(-1, 10), range(-1, 12, 3)):
        got = extract_crop(volume, center, spec)
        np.testing.assert_array_equal(got, _reference(volume, center, spec), err_msg=f"centre {center}")


def test_even_size_extra_voxel_goes_to_low_side() -> None:
    vol = np.arange(20, dtype=np.float32).reshape(1, 1, 20)
    crop = extract_crop(vol, (0, 0, 10), CropSpec((1, 4), "inline"))
    assert crop.tolist() == [[8.0, 9.0, 10.0, 11.0]]


def test_fully_outside_is_zero_and_out_buffer_is_written_in_place(volume: np.ndarray) -> None:
    spec = CropSpec((3, 3, 3), "3d")
    out = np.full(spec.out_shape(), 7.0, dtype=np.float32)
    assert extract_crop(volume, (50, 50, 50), spec, out=out) is out
    assert not out.any()
    extract_crop(volume, (3, 4, 5), spec, out=out)
    np.testing.assert_array_equal(out, volume[2:5, 3:6, 4:7])


def test_reads_from_read_only_memmap_and_casts(tmp_path) -> None:
    path = tmp_path / "v.i16"
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    data.tofile(path)
    mm = np.memmap(path, dtype=np.int16, mode="r", shape=data.shape)
    crop = extract_crop(mm, (1, 2, 3), CropSpec((3, 3), "crossline"))
    assert crop.dtype == np.float32
    np.testing.assert_array_equal(crop, data[0:3, 2, 2:5].astype(np.float32))


def test_bad_specs_and_buffers_are_refused(volume: np.ndarray) -> None:
    with pytest.raises(CropError, match="orientation"):
        CropSpec((3, 3), "diagonal")
    with pytest.raises(CropError, match="needs 3 sizes"):
        CropSpec((3, 3), "3d")
    with pytest.raises(CropError, match=">= 1"):
        CropSpec((0, 3))
    with pytest.raises(CropError, match="float32"):
        extract_crop(volume, (1, 1, 1), CropSpec((3, 3)), out=np.zeros((3, 3), np.float64))
    assert CropSpec.from_dict(CropSpec((3, 4), "time").to_dict()) == CropSpec((3, 4), "time")


# --- batched extraction: CropWindows / extract_crops must equal extract_crop crop by crop ---

# beyond SPECS: rows longer than the volume's axis (gathered cell by cell), and crops over the gather limit (sliced)
BATCH_SPECS = SPECS + [CropSpec((3, 12), "inline"), CropSpec((2, 10), "time"), CropSpec((26, 26, 26), "3d"),
                       CropSpec((200, 90), "time")]


def _all_centres(step: int = 1) -> np.ndarray:
    """Centres in and just around the 7 x 9 x 11 volume (every edge, corner and fully-outside case)."""
    return np.array(list(itertools.product(range(-2, 9, step), range(-2, 11, step), range(-2, 13, 2 * step))))


@pytest.mark.parametrize("spec", BATCH_SPECS, ids=lambda s: f"{s.orientation}-{'x'.join(map(str, s.size))}")
def test_batched_crops_equal_extract_crop_for_every_centre(volume: np.ndarray, spec: CropSpec) -> None:
    centres = _all_centres(1 if np.prod(spec.size) < 1000 else 3)  # big crops: fewer centres, same edges
    expected = np.stack([extract_crop(volume, tuple(c), spec) for c in centres])
    np.testing.assert_array_equal(extract_crops(volume, centres, spec), expected)
    windows = CropWindows(volume.shape, centres, spec)
    longer_than_axis = spec.size[-1] > volume.shape[spec.volume_axes[-1]]
    assert windows.mode == ("slices" if np.prod(spec.size) > 16384 else "cells" if longer_than_axis else "rows")
    ones = np.ones_like(volume)
    np.testing.assert_array_equal(windows.inside, np.stack([extract_crop(ones, tuple(c), spec) for c in centres]) > 0)
    # the same windows cut a second volume of the same shape, into a strided view of a channel-first batch
    batch = np.full((len(centres), 3, *spec.size), 9.0, np.float32)
    assert windows.cut(volume * 2, out=batch[:, 1]).base is not None
    np.testing.assert_array_equal(batch[:, 1], 2 * expected)
    assert (batch[:, 0] == 9.0).all() and (batch[:, 2] == 9.0).all()
    # a transform sees every cell, the zeroed ones too, before the crops reach ``out``
    shifted = windows.cut(volume, out=batch[:, 2], transform=lambda crops: np.add(crops, 1, out=crops))
    np.testing.assert_array_equal(shifted, expected + 1)


def test_batched_crops_cast_memmaps_and_fall_back_for_strided_and_hdf5(tmp_path, volume: np.ndarray) -> None:
    import h5py

    spec = CropSpec((3, 4), "crossline")
    centres = _all_centres()
    data = (volume * 100).astype(np.int16)
    data.tofile(tmp_path / "v.i16")
    mm = np.memmap(tmp_path / "v.i16", dtype=np.int16, mode="r", shape=data.shape)
    expected = np.stack([extract_crop(data, tuple(c), spec) for c in centres])
    got = extract_crops(mm, centres, spec)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    halved = CropWindows(data.shape, centres, spec).cut(mm, transform=lambda crops: np.multiply(crops, 0.5, out=crops))
    np.testing.assert_array_equal(halved, expected * np.float32(0.5))  # cast to float32 before the transform
    strided = np.asfortranarray(data)  # not C-ordered: cut crop by crop
    np.testing.assert_array_equal(extract_crops(strided, centres, spec), expected)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["v"] = data
    with h5py.File(tmp_path / "v.h5", "r") as f:
        np.testing.assert_array_equal(CropWindows(data.shape, centres, spec).cut(f["v"]), expected)


def test_batched_crops_refuse_bad_centres_shapes_and_buffers(volume: np.ndarray) -> None:
    spec = CropSpec((3, 3))
    with pytest.raises(CropError, match=r"\[n, 3\]"):
        extract_crops(volume, np.zeros((4, 2), int), spec)
    with pytest.raises(CropError, match="differs from the planned"):
        CropWindows((7, 9, 12), np.zeros((4, 3), int), spec).cut(volume)
    with pytest.raises(CropError, match="float32"):
        extract_crops(volume, np.zeros((4, 3), int), spec, out=np.zeros((4, 3, 3), np.float64))
    assert extract_crops(volume, np.zeros((0, 3), int), spec).shape == (0, 3, 3)
