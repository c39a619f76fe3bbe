"""A survey's amplitudes against those a model was trained on: the warning a predict job gives, and the
normalisation a model trained from example sets is applied with.

A model trained from example sets normalised each example with its own source survey's statistics (normalisation
method "per_survey"), so it is applied to a survey normalised with that survey's own statistics. A model trained
from one survey on the fly keeps that survey's (mean, std) (method "standardise"), as before.

Either way, a survey whose amplitudes lie far from every training survey's is worth a word: predict warns when, for
the first input volume, the survey's standard deviation is more than FACTOR times larger or smaller than each
training survey's, or its mean lies more than FACTOR of a training survey's standard deviations from that survey's
mean (for every training survey). The warning names the survey's figures and each training survey's.
"""
from __future__ import annotations

import dataclasses
from typing import Any

FACTOR = 5.0


def training_surveys(info: Any) -> list[dict[str, Any]]:
    """[{name, volumes: [{name, mean, std}]}] the model was trained on (model files from before trained_on existed:
    the survey of input_spec, with the normalisation's statistics)."""
    if info.trained_on.get("surveys"):
        return list(info.trained_on["surveys"])
    vols = (info.normalisation or {}).get("volumes") or []
    if not vols:
        return []
    return [{"name": (info.input_spec or {}).get("survey") or "?", "volumes": [
        {"name": v.get("name"), "mean": float(v["mean"]), "std": float(v["std"])} for v in vols]}]


def _far(mean: float, std: float, src: dict[str, Any]) -> bool:
    s_mean, s_std = float(src["mean"]), float(src["std"]) or 1.0
    ratio = std / s_std if s_std > 0 and std > 0 else float("inf")
    return not (1 / FACTOR <= ratio <= FACTOR) or abs(mean - s_mean) > FACTOR * s_std


def amplitude_warning(info: Any, survey: Any, volume: str) -> str | None:
    """The warning for predicting ``survey`` (its ``volume``, the model's first input) with this model, or None."""
    sources = [s for s in training_surveys(info) if s.get("volumes")]
    if not sources:
        return None
    stats = survey.stats(volume)
    mean, std = float(stats["mean"]), float(stats["std"])
    if not all(_far(mean, std, s["volumes"][0]) for s in sources):
        return None
    trained = ", ".join(f"{s['name']!r} (mean {s['volumes'][0]['mean']:.4g}, std {s['volumes'][0]['std']:.4g})"
                        for s in sources)
    return (f"survey {survey.name!r} volume {volume!r} has amplitude mean {mean:.4g}, std {std:.4g}, far outside "
            f"those the model was trained on: {trained} (more than {FACTOR:g}x apart in std, or more than "
            f"{FACTOR:g} std apart in mean); check the prediction, or train with examples of this survey")


def survey_normalised(recipe: Any, info: Any, survey: Any) -> Any:
    """The apply recipe with this survey's own (mean, std) per volume for a per_survey model; else unchanged."""
    if (info.normalisation or {}).get("method") != "per_survey":
        return recipe
    own = tuple((float(survey.stats(v)["mean"]), float(survey.stats(v)["std"]) or 1.0) for v in recipe.volumes)
    return dataclasses.replace(recipe, normalisation=own)
