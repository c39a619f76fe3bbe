"""Runners of the `import` and `extract` kinds (executor side): they call the torch-free library in workers/.

Their specs and submit-time checks live in daemon/kinds/data.py (main side)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from daemon.common.home import example_set_file, survey_folder
from daemon.kinds.data import ExtractSpec, ImportSpec, PicksSection, SegySection


def run_import(spec: ImportSpec, ctx: Any) -> dict[str, Any]:
    from workers.picks import PicksError
    from workers.segy_scan import SegyImportError

    folder = survey_folder(ctx.home, spec.survey)
    section = "segy" if spec.segy is not None else "picks"
    try:
        if spec.segy is not None:
            return _import_segy(spec, spec.segy, folder, ctx)
        return _import_picks(spec, spec.picks, folder, ctx)
    except (SegyImportError, PicksError) as exc:
        raise type(exc)(job_keys(str(exc), section)) from exc


ARGUMENT = re.compile(r"`(\w+)(: [^`]+)?`")  # how workers' errors name an argument that fixes them


def job_keys(message: str, section: str) -> str:
    """A workers error's message with each argument it names (`` `offset: N` ``) named as the job key it comes
    from (`` `segy.offset: N` ``), the form seisctl turns into a command's flag (client/cli/_keys.py)."""
    return ARGUMENT.sub(lambda m: f"`{section}.{m[1]}{m[2] or ''}`", message)


def _import_segy(spec: ImportSpec, s: SegySection, folder: Path, ctx: Any) -> dict[str, Any]:
    from workers.segy_import import add_volume, import_segy

    from workers.survey import Survey

    done = Survey.open(folder) if ctx.resume and (folder / "survey.json").is_file() else None
    if done is not None and s.volume in done.volumes:
        ctx.log.info("survey %s volume %s was completed by an earlier attempt", spec.survey, s.volume)
        return _survey_result(spec, s, done, None, ctx)
    kw = dict(iline=s.iline, xline=s.xline, endian=s.endian, offset=s.offset,
              progress=lambda f, m: ctx.progress(f, m), cancel=ctx.cancelled.is_set)
    ctx.log.info("importing %s as %s of survey %s", s.file, s.volume, spec.survey)
    if s.add_volume:
        survey = add_volume(s.file, folder, s.volume, **kw)
    else:
        survey = import_segy(s.file, folder, name=spec.survey, volume=s.volume, sample_unit=s.sample_unit, **kw)
    ctx.check_cancel()
    return _survey_result(spec, s, survey, getattr(survey, "import_report", None), ctx)


def _survey_result(spec: ImportSpec, s: SegySection, survey: Any, report: Any, ctx: Any) -> dict[str, Any]:
    result = {"survey": spec.survey, "volume": s.volume, "shape": list(survey.shape),
              "inlines": [int(survey.inlines[0]), int(survey.inlines[-1])],
              "crosslines": [int(survey.crosslines[0]), int(survey.crosslines[-1])],
              "samples": [float(survey.samples[0]), float(survey.samples[-1])], "stats": survey.stats(s.volume)}
    if report is not None:
        result.update(dead_traces=report.dead_traces, nan_replaced=report.nan_count, endian=report.endian,
                      sorting=report.sorting)
        if report.nan_count:
            ctx.log.warning("%d NaN or infinite samples were replaced by 0", report.nan_count)
    ctx.log.info("imported: %s", json.dumps(result, default=str))  # JSON in the log, not a Python repr
    return result


def _import_picks(spec: ImportSpec, p: PicksSection, folder: Path, ctx: Any) -> dict[str, Any]:
    from workers.picks import read_pick_files
    from workers.survey import Survey

    survey = Survey.open(folder)
    ctx.progress(0.1, f"reading {len(p.files)} pick files")
    picks = read_pick_files(p.files, survey, class_pattern=p.class_pattern, z_unit=p.z_unit,
                            class_column=p.class_column, drop_outside=p.drop_outside)
    merged: dict[str, int] = {}
    if p.add:
        from workers.picks import PickSet, merge_pick_sets

        picks, merged = merge_pick_sets(PickSet.load(folder, p.set), picks)
        ctx.log.info("added to pick set %s: %s (a position picked again takes the new class)", p.set,
                     json.dumps(merged))
    path = picks.save(folder, p.set)
    counts = picks.counts()
    ctx.log.info("pick set %s: %d points in %d classes %s; dropped %d outside, %d duplicates", p.set, len(picks),
                 len(counts), json.dumps(counts, default=str), picks.dropped_outside, picks.dropped_duplicates)
    return {"survey": spec.survey, "set": p.set, "points": len(picks), "classes": counts,
            "dropped_outside": picks.dropped_outside, "dropped_duplicates": picks.dropped_duplicates,
            "file": str(path), **({"add": merged} if p.add else {})}


def run_extract(spec: ExtractSpec, ctx: Any) -> dict[str, Any]:
    from workers.crops import CropSpec
    from workers.examples import extract_examples
    from workers.picks import PickSet
    from workers.survey import Survey

    sources = []
    for src in spec.sources:
        folder = survey_folder(ctx.home, src.survey)
        sources.append((Survey.open(folder), PickSet.load(folder, src.picks), list(src.volumes)))
    crop = CropSpec(tuple(spec.crop.size), spec.crop.orientation)
    out = example_set_file(ctx.home, spec.examples)
    info = extract_examples(sources, crop, out, job_id=str(ctx.job_id), notes=spec.notes,
                            progress=lambda f, m: ctx.progress(f, m), cancel=ctx.cancelled.is_set)
    ctx.check_cancel()
    ctx.log.info("example set %s: %d examples, classes %s", info.name, info.count,
                 json.dumps(info.class_counts, default=str))
    return {"examples": info.name, "count": info.count, "classes": info.class_counts, "file": str(info.path)}
