"""`seisctl examples import` and `examples export` through a real daemon: a set made by hand in OpendTect's layout
imports and trains; an exported set read back is the same set; bad job files are refused naming the key."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from client.api import SeisdError
from tests.client.test_cli import seisctl, seisctl_json
from tests.harness import RunningDaemon, wait_state
from tests.workers.test_odt_examples import hand_made, write_info


def odt_set(path: Path, n_per_class: int = 40) -> None:
    """An OpendTect classification set (documented layout) with two classes a small CNN can tell apart: crops of
    positive noise (value 1, `Bright`) and of negative noise (value 2, `Dark`), 1 x 9 x 9, one attribute."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as h5:
        write_info(h5, {
            "Type": "Seismic Classification", "Content": "Classification Data", "Input.Shape": "1`9`9",
            "Output.Shape": "1", "Examples.Size": "1", "Examples.0.Name": "F3", "Examples.0.Survey": "F3_Demo",
            "Examples.0.Target": "Facies", "Examples.0.Size": "2", "Examples.0.0.Name": "Bright",
            "Examples.0.0.Class Name": "Bright", "Examples.0.0.ID": "1", "Examples.0.1.Name": "Dark",
            "Examples.0.1.Class Name": "Dark", "Examples.0.1.ID": "2", "Input.Size": "1", "Input.0.Name": "F3_Demo",
            "Input.0.Survey": "F3_Demo", "Input.0.Size": "1", "Input.0.0.Name": "Seismic",
            "Input.0.0.Stats": "0`1", "Edge extrapolation": "No"})
        for k, (name, sign) in enumerate((("Bright", 1), ("Dark", -1))):
            x = sign * np.abs(rng.normal(1, 0.5, size=(n_per_class, 1, 1, 9, 9))).astype(np.float32)
            h5[f"F3/{name}/x_data"] = x
            h5[f"F3/{name}/y_data"] = np.full((n_per_class, 1), k + 1, np.float32)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    with RunningDaemon(tmp_path_factory.mktemp("odtx") / "home") as d:
        yield d


def test_a_hand_made_set_imports_and_trains(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    odt_set(tmp_path / "training.h5")
    r = seisctl_json(d.home, "examples", "import", str(tmp_path / "training.h5"), "--name", "odt",
                     "--survey", "odt_survey")
    result = r["result"]
    assert r["state"] == "succeeded" and result["count"] == 80 and result["classes"] == {"Bright": 40, "Dark": 40}
    assert result["crop"] == {"size": [9, 9], "orientation": "inline"} and result["picks"] == "examples"
    listed = {e["name"]: e for e in seisctl_json(d.home, "examples", "list")["examples"]}
    assert listed["odt"]["count"] == 80 and listed["odt"]["volumes"] == ["Seismic"]
    job = {"kind": "train", "output": "from_odt",
           "data": {"survey": "odt_survey", "picks": "examples", "volumes": ["Seismic"], "crop": {"size": [9, 9]},
                    "batch_size": 16, "batches_per_epoch": 8, "val_batches": 2, "workers": 0,
                    "split": {"kind": "random"}},
           "model": {"name": "patchcnn", "params": {"filters": [4, 4, 4]}},
           "train": {"epochs": 2, "seed": 0, "early_stop": {"enabled": False}}}
    jid = d.client.submit(job)["id"]
    rec = wait_state(d.client, jid, timeout=240)
    assert rec["state"] == "succeeded", (rec, d.client.logs(jid))
    model = d.client.call("models.info", name="from_odt")
    assert model["classes"] == ["Bright", "Dark"] and model["in_channels"] == 1


def test_export_then_import_through_the_daemon_is_the_same_set(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    hand_made(tmp_path / "hand.h5")
    seisctl_json(d.home, "examples", "import", str(tmp_path / "hand.h5"), "--name", "hand", "--notes", "by hand")
    r = seisctl_json(d.home, "examples", "export", "hand", str(tmp_path / "out.h5"))
    assert r["state"] == "succeeded" and r["result"]["count"] == 9 and Path(r["result"]["file"]).is_file()
    seisctl_json(d.home, "examples", "import", str(tmp_path / "out.h5"), "--name", "back")
    sets = []
    for name in ("hand", "back"):
        with h5py.File(d.home / "examples" / f"{name}.h5", "r") as h5:
            sets.append((json.loads(h5.attrs["meta"]), {k: h5[k][()] for k in ("x", "y", "source", "position")}))
    assert sets[1][0] == sets[0][0] and sets[0][0]["notes"] == "by hand"
    for key, value in sets[0][1].items():
        np.testing.assert_array_equal(sets[1][1][key], value, err_msg=key)
    # the file is there now: a second export is refused naming it, and so is an import over an existing set
    again = seisctl(d.home, "--json", "examples", "export", "hand", str(tmp_path / "out.h5"))
    assert again.returncode == 2 and f"file: {tmp_path / 'out.h5'} already exists" in again.stdout
    with pytest.raises(SeisdError, match="examples: an example set 'hand' already exists"):
        d.client.submit({"kind": "opendtect", "action": "import", "file": str(tmp_path / "hand.h5"),
                         "examples": "hand"})
    with pytest.raises(SeisdError, match="file: .* is not an absolute path"):
        d.client.submit({"kind": "opendtect", "action": "export", "file": "rel.h5", "examples": "hand"})


def test_a_file_that_is_not_an_opendtect_set_fails_the_job_naming_why(daemon: RunningDaemon, tmp_path: Path) -> None:
    d = daemon
    with h5py.File(tmp_path / "plain.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    r = seisctl(d.home, "--json", "examples", "import", str(tmp_path / "plain.h5"), "--name", "plain")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "no ++info++ dataset at its root" in json.loads(r.stdout)["error"], r.stdout
    assert not (d.home / "examples" / "plain.h5").exists()
