"""A corpus of broken inputs against a daemon that has something to lose (survey f3 with picks, example set ex1,
model m1; paths.inputs set): truncated SEG-Y, wrong byte-order and format flags, NaN and infinite samples, empty and
foreign pick files, truncated HDF5 example sets and models, names with separators or '..', paths outside the
allowed folders (also through a symbolic link). Each is refused at submit or fails with a message naming the
problem; the daemon keeps answering; the files and settled job rows stored before are unchanged at the end."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from client.api import SeisdError
from tests.harness import ROOT, RunningDaemon, daemon_env, wait_state
from tests.reliability.homecheck import HomeSnapshot, assert_alive

TEXT, BINARY, TRACE_HEADER = 3200, 400, 240
F3_SAMPLES, F3_BYTES = 75, 2          # f3.sgy: 75 samples of format 3 (int16), big-endian


def _f3(inputs: Path) -> bytes:
    return (inputs / "f3.sgy").read_bytes()


def _patched(data: bytes, offset: int, fmt: str, value: Any) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _with_bad_samples(shared: Path, values: list[float]) -> bytes:
    """Format5msb.sgy (IEEE big-endian floats) with the first samples of the first trace replaced."""
    b = bytearray((shared / "segyio" / "Format5msb.sgy").read_bytes())
    first = TEXT + BINARY + TRACE_HEADER
    b[first:first + 4 * len(values)] = np.asarray(values, ">f4").tobytes()
    return bytes(b)


TRACE = TRACE_HEADER + F3_SAMPLES * F3_BYTES
F3_TRACES = 23 * 18


def _no_sample_interval(data: bytes) -> bytes:
    """f3 with the sample interval 0 in the binary header (bytes 3217-3218) and in every trace header (117-118)."""
    b = bytearray(_patched(data, 3216, ">h", 0))
    for k in range(F3_TRACES):
        struct.pack_into(">h", b, TEXT + BINARY + k * TRACE + 116, 0)
    return bytes(b)

# name -> (bytes of the file, what the outcome must mention). Outcome: refused at submit, or a failed job, or
# (NaN/inf only) a succeeded import that says how many samples it replaced.
SEGY_CASES: dict[str, tuple[Callable[[Path, Path], bytes], str]] = {
    "empty": (lambda i, s: b"", "empty"),
    "text-header-only-cut": (lambda i, s: _f3(i)[:1000], "f3-text-header-only-cut"),
    "headers-only": (lambda i, s: _f3(i)[:TEXT + BINARY], "headers-only"),
    "one-trace-header": (lambda i, s: _f3(i)[:TEXT + BINARY + TRACE_HEADER], "one-trace-header"),
    "cut-mid-trace": (lambda i, s: _f3(i)[:TEXT + BINARY + 7 * TRACE + 100], "cut-mid-trace"),
    "last-byte-missing": (lambda i, s: _f3(i)[:-1], "last-byte-missing"),
    "format-code-0": (lambda i, s: _patched(_f3(i), 3224, ">h", 0), "sample format code 0 (binary header"),
    "format-code-99": (lambda i, s: _patched(_f3(i), 3224, ">h", 99), "sample format code 99 (binary header"),
    # read little-endian the code is 3 (valid), so the file is read that way and fails on its sizes; the error says
    # why that byte order was the only one tried
    "format-code-byteswapped": (lambda i, s: _patched(_f3(i), 3224, ">h", 0x0300),
                                "sample format code (bytes 3225-3226) is 3 read that way and 768 read big-endian"),
    "sample-interval-0": (lambda i, s: _no_sample_interval(_f3(i)), "the sample interval is not set"),
    "samples-per-trace-0": (lambda i, s: _patched(_f3(i), 3220, ">h", 0), "sample"),
    "samples-per-trace-huge": (lambda i, s: _patched(_f3(i), 3220, ">H", 65535), "samples-per-trace-huge"),
    # SEG-Y rev 1 leaves bytes 3297-3300 unassigned: garbage there must not matter (the import succeeds)
    "byte-order-word-garbage": (lambda i, s: _patched(_f3(i), 3296, ">I", 0xDEADBEEF), "imported"),
    "nan-samples": (lambda i, s: _with_bad_samples(s, [float("nan")] * 5), "NaN"),
    "inf-samples": (lambda i, s: _with_bad_samples(s, [float("inf"), float("-inf")]), "NaN"),
}


@pytest.fixture(scope="module")
def snapshot(stocked_daemon: RunningDaemon) -> HomeSnapshot:
    return HomeSnapshot(stocked_daemon.home)


def _outcome(d: RunningDaemon, job: dict[str, Any]) -> tuple[str, str]:
    """('refused', message) when submit refuses the job, else (final state, error or log text)."""
    try:
        job_id = d.client.submit(job)["id"]
    except SeisdError as exc:
        assert exc.code == "invalid_job", f"{exc.code}: {exc.message}"
        return "refused", exc.message
    done = wait_state(d.client, job_id, timeout=120)
    return done["state"], (done["error"] or "") + d.client.logs(job_id)["text"]


@pytest.mark.parametrize("name", list(SEGY_CASES))
def test_broken_segy_is_refused_or_fails_naming_the_problem(stocked_daemon: RunningDaemon, shared_data: Path,
                                                            snapshot: HomeSnapshot, name: str) -> None:
    d, inputs = stocked_daemon, stocked_daemon.inputs  # type: ignore[attr-defined]
    make, mention = SEGY_CASES[name]
    path = inputs / f"f3-{name}.sgy"
    path.write_bytes(make(inputs, shared_data))
    state, text = _outcome(d, {"kind": "import", "survey": f"c-{name}", "segy": {"file": str(path)}})
    assert_alive(d, name)
    if name.endswith("-samples") or name == "byte-order-word-garbage":
        assert state == "succeeded" and mention.replace("NaN", "replaced by 0") in text, text
        d.client.call("survey.rm", name=f"c-{name}")
        return
    assert state in ("refused", "failed"), (state, text)
    assert mention.lower() in text.lower(), text
    assert "Traceback" not in text.split("job failed:")[0]
    assert not (d.home / "surveys" / f"c-{name}").exists(), "a failed import left its survey folder"


HEADER_FIELD_CASES: dict[str, tuple[Callable[[bytes], bytes], list[str]]] = {
    "sample-interval-0": (_no_sample_interval, [
        ("the sample interval is not set: binary header bytes 3217-3218 hold 0 and the first trace header's bytes "
         "117-118 hold 0"), "in microseconds (4000 for 4 ms", "f.bin.update(hdt=4000)"]),
    "format-code-99": (lambda data: _patched(data, 3224, ">h", 99), [
        "sample format code 99 (binary header bytes 3225-3226, read big-endian) is not one seisd reads",
        "it reads 1 (IBM float), 2 (int32), 3 (int16), 5 (IEEE float32)"]),
}


@pytest.mark.parametrize("name", list(HEADER_FIELD_CASES))
def test_a_bad_header_field_fails_the_job_naming_the_file_and_the_field(stocked_daemon: RunningDaemon,
                                                                        snapshot: HomeSnapshot, name: str) -> None:
    """The job's own error (not its log) names the file and the binary header field, and nothing else: a missing
    interval is not imported as 4 ms, format 99 is not 'pre-stack data: 137 offsets'."""
    d, inputs = stocked_daemon, stocked_daemon.inputs  # type: ignore[attr-defined]
    make, wanted = HEADER_FIELD_CASES[name]
    path = inputs / f"hdr-{name}.sgy"
    path.write_bytes(make(_f3(inputs)))
    job = wait_state(d.client, d.client.submit({"kind": "import", "survey": f"h-{name}",
                                                "segy": {"file": str(path)}})["id"], timeout=120)
    assert_alive(d, name)
    assert job["state"] == "failed", job
    assert f"cannot import {path}: " in job["error"], job["error"]
    for text in wanted:
        assert text in job["error"], job["error"]
    assert "offsets" not in job["error"] and "Traceback" not in job["error"], job["error"]
    assert not (d.home / "surveys" / f"h-{name}").exists()


def test_wrong_endianness_flag_is_refused_or_fails(stocked_daemon: RunningDaemon) -> None:
    d = stocked_daemon
    state, text = _outcome(d, {"kind": "import", "survey": "c-endian", "segy": {
        "file": str(d.inputs / "f3.sgy"), "endian": "little"}})  # type: ignore[attr-defined]
    assert_alive(d)
    assert state == "failed" and "f3.sgy" in text, (state, text)
    assert not (d.home / "surveys" / "c-endian").exists()


PICK_CASES: dict[str, tuple[str, str]] = {
    "empty": ("", "empty"),
    "blank-lines": ("\n\n\n", "multi_blank-lines_ilxl"),
    "two-columns": ("120\t880\n121\t881\n", "inline, crossline and z"),
    "text": ("inline crossline z\nfoo bar baz\n", "multi_text_ilxl"),
    "nan-z": ("120\t880\tnan\n", "multi_nan-z_ilxl.pts, line 1: '120 880 nan' has nan as z"),
    "ragged": ("120\t880\t100\n121\t881\n", "multi_ragged_ilxl.pts, line 2: '121 881' has 2 columns"),
    "garbage-line": ("120\t880\t100\nhello world 12\n121\t881\t104\n",
                     "multi_garbage-line_ilxl.pts, line 2: 'hello world 12' is not a point"),
    "nan-header": ("nan nan nan\n120\t880\t100\n", "multi_nan-header_ilxl.pts, line 1: 'nan nan nan' has nan"),
}


@pytest.mark.parametrize("name", list(PICK_CASES))
def test_broken_pick_files_fail_naming_the_file(stocked_daemon: RunningDaemon, snapshot: HomeSnapshot,
                                                name: str) -> None:
    d = stocked_daemon
    content, mention = PICK_CASES[name]
    path = d.inputs / f"multi_{name}_ilxl.pts"  # type: ignore[attr-defined]
    path.write_text(content)
    state, text = _outcome(d, {"kind": "import", "survey": "f3", "picks": {"files": [str(path)], "set": "bad"}})
    assert_alive(d, name)
    assert state in ("refused", "failed"), (state, text)
    assert mention.lower() in text.lower(), text
    assert not (d.home / "surveys" / "f3" / "picks" / "bad.npz").exists()


def test_pick_files_of_another_survey_are_refused(stocked_daemon: RunningDaemon, shared_data: Path,
                                                  snapshot: HomeSnapshot) -> None:
    d = stocked_daemon
    src = shared_data / "malenov-picks" / "multi_salt_ilxl.pts"
    path = d.inputs / src.name  # type: ignore[attr-defined]
    path.write_bytes(src.read_bytes())
    state, text = _outcome(d, {"kind": "import", "survey": "f3", "picks": {"files": [str(path)], "set": "salt"}})
    assert state == "failed" and "outside survey" in text, (state, text)
    assert_alive(d)


def _cut(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_truncated_hdf5_files_get_clear_errors(stocked_daemon: RunningDaemon, snapshot: HomeSnapshot) -> None:
    """A truncated example set and a truncated model file in the home: listings still work, the broken file's own
    info says what is wrong, and a predict job naming the broken model is refused."""
    d, c = stocked_daemon, stocked_daemon.client
    _cut(d.home / "examples" / "ex1.h5", d.home / "examples" / "cut.h5", 0.5)
    (d.home / "examples" / "junk.h5").write_text("not HDF5 at all\n")
    _cut(d.home / "models" / "m1.h5", d.home / "models" / "cut.h5", 0.5)
    try:
        listing = {e["name"]: e for e in c.call("examples", action="list")["examples"]}
        assert sorted(listing) == ["cut", "ex1", "junk"], listing  # the broken sets are listed, not hidden
        assert listing["ex1"]["count"] > 0 and "error" not in listing["ex1"] and not listing["ex1"]["broken"]
        assert "m1" in [m["name"] for m in c.call("models.list")["models"]]
        for name in ("cut", "junk"):
            with pytest.raises(SeisdError) as err:
                c.call("examples", action="info", name=name)
            assert err.value.code == "conflict" and str(d.home / "examples" / f"{name}.h5") in err.value.message
            assert listing[name]["broken"] and listing[name]["error"] == err.value.message, listing[name]
        table = subprocess.run([sys.executable, "-m", "client.cli", "examples", "list"], cwd=ROOT,
                               env=daemon_env(d.home), capture_output=True, text=True, timeout=60)
        assert table.returncode == 0 and "junk" in table.stdout and "BROKEN: " in table.stdout, table
        with pytest.raises(SeisdError) as err:
            c.call("models.info", name="cut")
        assert err.value.code != "internal" and "cut" in err.value.message, err.value
        state, text = _outcome(d, {"kind": "predict", "model": "cut", "survey": "f3", "output": "pcut"})
        assert state == "refused" and "model" in text, text
        assert c.call("examples", action="rm", name="junk") == {"removed": "junk"}  # the fix its error names
        assert_alive(d)
    finally:
        (d.home / "examples" / "cut.h5").unlink()
        (d.home / "examples" / "junk.h5").unlink(missing_ok=True)
        (d.home / "models" / "cut.h5").unlink()


BAD_NAMES = ["../escape", "a/b", "..", ".hidden", "/abs", "x" * 101, "f3/../../x", ""]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_with_separators_are_refused(stocked_daemon: RunningDaemon, snapshot: HomeSnapshot, bad: str) -> None:
    d = stocked_daemon
    f3 = str(d.inputs / "f3.sgy")  # type: ignore[attr-defined]
    jobs = [{"kind": "import", "survey": bad, "segy": {"file": f3}},
            {"kind": "import", "survey": "f3", "segy": {"file": f3, "volume": bad, "add_volume": True}},
            {"kind": "extract", "examples": bad, "sources": [{"survey": "f3", "picks": "two"}],
             "crop": {"size": [8, 8]}},
            {"kind": "extract", "examples": "ok1", "sources": [{"survey": "f3", "picks": bad}],
             "crop": {"size": [8, 8]}},
            {"kind": "predict", "model": bad, "survey": "f3", "output": "p1"},
            {"kind": "predict", "model": "m1", "survey": "f3", "output": bad}]
    for job in jobs:
        state, text = _outcome(d, job)
        assert state == "refused", (job, state, text)
    for op, args in (("survey.info", {"name": bad}), ("survey.rm", {"name": bad}), ("models.rm", {"name": bad}),
                     ("examples", {"action": "rm", "name": bad})):
        with pytest.raises(SeisdError) as err:
            d.client.call(op, **args)
        assert err.value.code in ("bad_args", "not_found"), (op, err.value.code, err.value.message)
    assert_alive(d)


def test_paths_outside_the_allowed_folders_are_refused(stocked_daemon: RunningDaemon, shared_data: Path,
                                                       snapshot: HomeSnapshot, tmp_path: Path) -> None:
    d = stocked_daemon
    inputs: Path = d.inputs  # type: ignore[attr-defined]
    link = inputs / "sneaky.sgy"
    if not link.exists():
        os.symlink(shared_data / "segyio" / "f3.sgy", link)   # inside by name, outside once resolved
    beside = inputs.parent / "beside.sgy"
    beside.write_bytes((inputs / "f3.sgy").read_bytes())
    outside = [str(shared_data / "segyio" / "f3.sgy"), str(inputs / ".." / "beside.sgy"), str(link),
               "/etc/hostname", str(tmp_path)]
    for f in outside:
        state, text = _outcome(d, {"kind": "import", "survey": "c-out", "segy": {"file": f}})
        assert state == "refused" and "outside the folders" in text, (f, text)
        state, text = _outcome(d, {"kind": "import", "survey": "f3", "picks": {"files": [f]}})
        assert state == "refused" and "outside the folders" in text, (f, text)
    assert_alive(d)


def test_train_job_cannot_reach_outside_the_allowed_folders(stocked_daemon: RunningDaemon, tmp_path: Path,
                                                            snapshot: HomeSnapshot) -> None:
    """A train job names files too (a user model's Python file, train.init_from): paths.inputs must hold for
    them as for SEG-Y and picks. The user model file here would leave a marker if the daemon ran it."""
    d = stocked_daemon
    marker = tmp_path / "ran"
    evil = tmp_path / "evil_model.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    base = {"kind": "train", "output": "t-out", "data": {"survey": "f3", "picks": "two", "crop": {"size": [8, 8]}}}
    state, text = _outcome(d, {**base, "model": {"name": "user", "params": {"path": str(evil)}}})
    assert state == "refused" and "outside the folders" in text, (state, text)
    assert not marker.exists(), "the daemon ran a Python file from outside paths.inputs"
    state, text = _outcome(d, {**base, "model": {"name": "patchcnn"}, "train": {"init_from": "/etc/hostname"}})
    assert state == "refused" and "outside the folders" in text, (state, text)
    assert_alive(d)


def test_nothing_stored_changed(stocked_daemon: RunningDaemon, snapshot: HomeSnapshot) -> None:
    """Runs last in this module: after the whole corpus, every file and settled job row is as it was."""
    assert_alive(stocked_daemon)
    assert snapshot.changes() == []
