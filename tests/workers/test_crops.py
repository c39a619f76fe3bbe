"""extract_crop against an independent reference built by zero-padding the whole volume."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from workers.crops import CropError, CropSpec, extract_crop


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
