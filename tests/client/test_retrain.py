"""client/retrain.py: what `seisctl submit --from` and tools/loop_experiment.py make of a train job file."""
from __future__ import annotations

import pytest

from client.retrain import RETRAIN_EPOCHS, RetrainError, from_model


def test_a_retrain_starts_from_the_model_for_the_loops_epochs_without_early_stopping() -> None:
    job = {"kind": "train", "train": {"epochs": 80, "early_stop": {"enabled": True, "patience": 9}, "seed": 3}}
    assert from_model(job, "facies") is job
    assert job["train"] == {"epochs": RETRAIN_EPOCHS, "seed": 3, "mode": "resume", "init_from": "models/facies.h5",
                            "early_stop": {"enabled": False, "patience": 9}}
    assert from_model({"kind": "train"}, "m", "transfer", epochs=5)["train"] == {
        "mode": "transfer", "init_from": "models/m.h5", "epochs": 5, "early_stop": {"enabled": False}}


@pytest.mark.parametrize("job, mode, words", [
    ({"kind": "predict"}, "resume", "kind 'predict'"),
    ({"kind": "train", "train": [1]}, "resume", "train must be a mapping"),
    ({"kind": "train"}, "new", "mode 'new'"),
])
def test_what_cannot_be_a_retrain_is_refused_by_name(job: dict, mode: str, words: str) -> None:
    with pytest.raises(RetrainError, match=words):
        from_model(job, "m", mode)
