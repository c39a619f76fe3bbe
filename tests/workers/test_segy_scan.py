"""Binary and trace header fields that decide how a SEG-Y is read (workers/segy_scan.py): checked before anything
is binned, so a bad field is reported as itself and not as a symptom (a wrong offset count, a made-up 4 ms axis)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from workers.segy_import import SegyImportError, import_segy

TEXT_BINARY = 3600
INTERVAL_BYTE, FORMAT_BYTE = 3217, 3225          # binary header, 1-based
TRACE_INTERVAL_BYTE = 117                        # trace header, 1-based
F3_TRACES, F3_TRACE_BYTES = 414, 240 + 75 * 2    # f3.sgy: 23 x 18 traces of 75 int16 samples, big-endian


def _patched(src: Path, dst: Path, order: str = ">", binary: dict[int, int] | None = None,
             traces: dict[int, int] | None = None) -> Path:
    """A copy of f3 (or f3-lsb) with 2-byte binary header fields and the same 2-byte field of every trace header set."""
    b = bytearray(src.read_bytes())
    for byte, value in (binary or {}).items():
        struct.pack_into(f"{order}h", b, byte - 1, value)
    for byte, value in (traces or {}).items():
        for k in range(F3_TRACES):
            struct.pack_into(f"{order}h", b, TEXT_BINARY + k * F3_TRACE_BYTES + byte - 1, value)
    dst.write_bytes(b)
    return dst


@pytest.mark.parametrize("name,order", [("f3.sgy", ">"), ("f3-lsb.sgy", "<")])
def test_a_zero_sample_interval_is_refused_naming_both_fields(shared_data: Path, tmp_path: Path, name: str,
                                                              order: str) -> None:
    src = _patched(shared_data / "segyio" / name, tmp_path / "dt0.sgy", order, {INTERVAL_BYTE: 0},
                   {TRACE_INTERVAL_BYTE: 0})
    with pytest.raises(SegyImportError) as err:
        import_segy(src, tmp_path / "s")
    msg = str(err.value)
    assert str(src) in msg and "sample interval" in msg
    assert "bytes 3217-3218" in msg and "bytes 117-118" in msg  # the two fields it looked in
    assert "microseconds" in msg and "4000 for 4 ms" in msg     # the fix
    assert not (tmp_path / "s").exists() and not (tmp_path / ".s.partial").exists()


def test_the_trace_headers_interval_is_used_when_the_binary_header_has_none(shared_data: Path,
                                                                            tmp_path: Path) -> None:
    src = _patched(shared_data / "segyio" / "f3.sgy", tmp_path / "dt-in-traces.sgy", ">", {INTERVAL_BYTE: 0},
                   {TRACE_INTERVAL_BYTE: 2000})
    survey = import_segy(src, tmp_path / "s")
    assert survey.geometry.sample_step == 2.0 and survey.samples[1] - survey.samples[0] == 2.0


@pytest.mark.parametrize("code", [99, 0, 4, 7, 15, -1])
def test_an_unsupported_format_code_is_reported_before_anything_else(shared_data: Path, tmp_path: Path,
                                                                     code: int) -> None:
    """Format 99 once came out as 'pre-stack data: 137 offsets' (the traces read 4 bytes a sample); 15 (3-byte
    integers) imported as IBM garbage. Both byte orders."""
    for name, order in (("f3.sgy", ">"), ("f3-lsb.sgy", "<")):
        src = _patched(shared_data / "segyio" / name, tmp_path / f"fmt{code}-{name}", order, {FORMAT_BYTE: code})
        with pytest.raises(SegyImportError) as err:
            import_segy(src, tmp_path / "s")
        msg = str(err.value)
        assert str(src) in msg and f"sample format code {code} " in msg and "bytes 3225-3226" in msg, msg
        assert "1 (IBM float)" in msg and "5 (IEEE float32)" in msg and "16 (uint8)" in msg, msg
        assert "offsets" not in msg and "pre-stack" not in msg, msg


def test_a_given_byte_order_reads_the_format_code_in_that_order(shared_data: Path, tmp_path: Path) -> None:
    """f3 is big-endian (format 3): told 'little', the code reads 768; the error says so and what the other byte
    order gives."""
    with pytest.raises(SegyImportError, match=r"sample format code 768 \(binary header bytes 3225-3226, read "
                                              r"little-endian\).*read big-endian it is 3 \(int16\)"):
        import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "s", endian="little")
