"""How a model file's input_spec becomes an apply recipe: the orientation a whole volume and a stream get."""
from __future__ import annotations

import pytest

from daemon.executor.modelfile import ModelInfo
from daemon.executor.predict.recipe import recipe_of
from daemon.executor.training.job import _apply_orientation
from daemon.kinds.train_spec import DataSection


def _info(**spec: object) -> ModelInfo:
    return ModelInfo(name="unet", params={}, in_channels=1, n_classes=3, input_shape=[64, 64],
                     input_spec={"apply_kind": "fcn", "crop": [64, 64], "volumes": ["seismic"], **spec})


def _data(orientation: str, p_swap: float) -> DataSection:
    return DataSection(survey="s", crop={"size": [64, 64], "orientation": orientation},
                       augment={"p_swap": p_swap})


@pytest.mark.parametrize(("orientation", "p_swap", "members", "want"), [
    ("inline", 0.5, 1, "both"), ("crossline", 0.1, 1, "both"), ("inline", 0.0, 1, "inline"),
    ("crossline", 0.0, 1, "crossline"), ("inline", 0.5, 3, "split"), ("crossline", 0.5, 2, "split"),
    ("inline", 0.0, 3, "inline"),
])
def test_train_jobs_advise_both_orientations_after_swapped_crops(orientation: str, p_swap: float, members: int,
                                                                  want: str) -> None:
    # an ensemble's members are split between the two ways (half the passes), a single model runs both
    assert _apply_orientation(_data(orientation, p_swap), members) == want


def test_split_is_refused_for_a_single_model_before_anything_runs() -> None:
    from daemon.executor.predict.apply import PredictError

    pair = ModelInfo(name="unet", params={"members": 2}, in_channels=1, n_classes=3, input_shape=[64, 64],
                     input_spec={"apply_kind": "fcn", "crop": [64, 64], "apply_orientation": "split"})
    assert recipe_of(pair).orientation == "split"
    with pytest.raises(PredictError, match="one member: use 'both'"):
        recipe_of(_info(), orientation="split")  # a stream's option or a predict job's key, on a single model


def test_whole_volumes_follow_the_advice_streams_and_overrides_do_not() -> None:
    info = _info(orientation="inline", apply_orientation="both")
    assert recipe_of(info).orientation == "both"
    assert recipe_of(info, whole_volume=False).orientation == "inline"  # a stream's block: the training way
    assert recipe_of(info, orientation="crossline").orientation == "crossline"
    assert recipe_of(_info(orientation="crossline")).orientation == "crossline"  # older files: no advice
    assert recipe_of(_info()).orientation == "inline"


def test_a_context_model_takes_its_sections_per_volume_and_only_as_an_fcn() -> None:
    from daemon.executor.predict.apply import PredictError

    info = ModelInfo(name="unet", params={}, in_channels=5, n_classes=3, input_shape=[64, 64],
                     input_spec={"apply_kind": "fcn", "crop": [64, 64], "context": 2})
    recipe = recipe_of(info)
    assert recipe.volumes == ("seismic",) and recipe.context == 2 and recipe.n_channels == 1
    assert recipe.apply_kwargs((8, 8, 8))["context"] == 2
    assert "context" not in recipe_of(_info()).apply_kwargs((8, 8, 8))
    with pytest.raises(PredictError, match="takes 4 input channels .* with 2 context sections"):
        recipe_of(ModelInfo(**{**vars(info), "in_channels": 4}))
    with pytest.raises(PredictError, match="fully convolutional 2D models only"):
        patch_spec = {**info.input_spec, "apply_kind": "patch"}
        recipe_of(ModelInfo(**{**vars(info), "name": "patchcnn", "input_spec": patch_spec}))
