"""Runner of the `opendtect` kind (executor side): OpendTect example sets in and out, by workers/odt_examples.py.

Its spec and submit-time checks live in daemon/kinds/opendtect.py (main side)."""
from __future__ import annotations

from typing import Any

from daemon.common.home import example_set_file, survey_folder
from daemon.kinds.opendtect import OpendtectSpec


def run_opendtect(spec: OpendtectSpec, ctx: Any) -> dict[str, Any]:
    from workers.odt_examples import export_odt, import_odt

    target = example_set_file(ctx.home, spec.examples)
    progress, cancel = (lambda f, m: ctx.progress(0.9 * f if spec.survey else f, m)), ctx.cancelled.is_set
    if spec.action == "export":
        ctx.log.info("writing example set %s as OpendTect's layout to %s", spec.examples, spec.file)
        result = export_odt(target, spec.file, overwrite=spec.overwrite, progress=progress, cancel=cancel)
        ctx.check_cancel()
        ctx.log.info("exported %d examples to %s", result["count"], result["file"])
        return result
    ctx.log.info("reading OpendTect example set %s into example set %s", spec.file, spec.examples)
    s = import_odt(spec.file, target, notes=spec.notes, job_id=str(ctx.job_id), progress=progress, cancel=cancel)
    ctx.check_cancel()
    result = {"examples": s.name, "count": s.count, "classes": s.class_counts, "crop": s.meta["crop"],
              "volumes": s.meta["volumes"], "file": str(s.path)}
    ctx.log.info("example set %s: %d examples, classes %s", s.name, s.count, s.class_counts)
    if spec.survey:
        from workers.example_survey import PICKS, survey_of_examples

        ctx.progress(0.9, f"laying the examples out as survey {spec.survey}")
        survey, picks = survey_of_examples(target, survey_folder(ctx.home, spec.survey), spec.survey, cancel=cancel)
        ctx.check_cancel()
        result.update(survey=spec.survey, picks=PICKS, survey_shape=list(survey.shape))
        ctx.log.info("survey %s %s with pick set %s (%d points): train on it with data.survey: %s, data.picks: "
                     "%s, the crop %s and data.split.kind: random", spec.survey, list(survey.shape), PICKS,
                     len(picks), spec.survey, PICKS, s.meta["crop"])
    return result
