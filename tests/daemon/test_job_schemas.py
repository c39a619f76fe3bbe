"""The job files' JSON Schemas (daemon/kinds/job_schemas.py, docs/schemas/): up to date, valid, and in agreement with
submit's own validation on fuzzed job files (the property-based fuzzer of tests/reliability): whatever the spec
refuses, the schema refuses at the same keys, and what the schema refuses beyond the spec is what submit's name
checks refuse. tests/conformance/test_s8_jobs.py checks the `schema` operation against submit through a daemon."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import HealthCheck, Phase, given, settings

import tests.daemon.testkinds  # noqa: F401  (registers test.steps, as the test daemons do)
from daemon.kinds import CheckContext, InvalidJob, get_kind, kind_names
from daemon.kinds.job_schemas import BUILT_IN, documents, job_schema, kind_schema, stale
from daemon.kinds.registry import parse_spec
from tests.conformance.test_s8_jobs import related, schema_paths
from tests.reliability.test_fuzz_jobfiles import base_jobs, job_files

ROOT = Path(__file__).resolve().parents[2]


def test_the_schema_files_are_up_to_date() -> None:
    assert stale(ROOT / "docs" / "schemas") == [], "regenerate: python -m daemon.kinds.job_schemas docs/schemas"
    assert set(documents(list(BUILT_IN))) == {f"{k}.json" for k in BUILT_IN} | {"job.json"}
    assert set(BUILT_IN) < set(kind_names())  # every built-in kind is registered (and test.steps beside them)


def test_every_schema_is_a_valid_2020_12_schema() -> None:
    for name in kind_names():
        jsonschema.Draft202012Validator.check_schema(kind_schema(get_kind(name)))
    jsonschema.Draft202012Validator.check_schema(job_schema())


def test_the_schemas_agree_with_submit_on_fuzzed_job_files(tmp_path: Path) -> None:
    validator = jsonschema.Draft202012Validator(job_schema())
    ctx = CheckContext(home=tmp_path)
    seen = {"refused by both": 0, "accepted by both": 0, "names": 0}

    @settings(max_examples=400, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(job=job_files(base_jobs(tmp_path)))  # type: ignore[attr-defined]
    def case(job: Any) -> None:
        kind = get_kind(job.get("kind")) if isinstance(job, dict) and isinstance(job.get("kind"), str) else None
        schema = schema_paths(validator, job)
        try:
            if kind is None:
                raise InvalidJob(["kind: unknown"])
            spec = parse_spec(kind.spec, job)
        except InvalidJob as exc:
            submit = {p.split(": ", 1)[0] for p in exc.problems}
            assert schema, f"the schema accepts what submit refuses: {job!r}: {exc.problems}"
            assert all(any(related(p, q) for q in schema) for p in submit), (job, submit, schema)
            seen["refused by both"] += 1
            return
        if not schema:
            seen["accepted by both"] += 1
            return
        # beyond the spec, the schema refuses only names: what submit's check refuses before looking at the home
        checked = {p.split(": ", 1)[0] for p in (kind.check(spec, ctx) if kind.check else [])}
        assert all(any(related(q, p) for p in checked) for q in schema), (job, schema, checked)
        seen["names"] += 1

    case()
    assert seen["refused by both"] > 100 and seen["accepted by both"] > 20, seen
