"""JSON Schemas (draft 2020-12) of job files, generated from the job kinds' own pydantic specs.

    python -m daemon.kinds.job_schemas docs/schemas           write one file per built-in kind and job.json
    python -m daemon.kinds.job_schemas --check docs/schemas   exit 1, naming the files, when they are stale

The daemon serves the same documents through the `schema` operation (docs/PROTOCOL.md section 5), for every kind
it has registered (plugins too), so a host can validate a job file before it submits it. A schema is made by
pydantic from the kind's `spec` model; what a field's type, bounds and choices say is in it, and rules across keys
that a spec states in `json_schema_extra` (exactly one of `segy` or `picks`, crop sizes and orientation ...).

What a schema cannot say, submit still checks (`invalid_job`): rules that compare values with each other
(train: data.batch_size a multiple of train.distributed.world_size, a crop the model can take), the workers'
augmentation ranges, and everything that looks at the daemon's home or files (surveys, picks, models and files
that must exist, names that are taken). An integer written with a decimal point (1.0) passes a schema, as JSON
Schema counts it an integer; submit refuses it where a key must be an integer.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from daemon.kinds.registry import JobKind, get_kind, kind_names

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SUBMIT_ALSO_CHECKS = ("Submit also checks what a schema cannot say: rules comparing keys with each other, and "
                      "everything that looks at the daemon's home or files (surveys, models and files that must "
                      "exist, names already taken); see docs/PROTOCOL.md section 8.")


class _NoTitles(GenerateJsonSchema):
    """pydantic's schema without the titles it makes up for every field ("P Flip"): descriptions stay."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def kind_schema(kind: JobKind) -> dict[str, Any]:
    """The JSON Schema of one kind's job file, standalone (its sections in its own `$defs`)."""
    s = kind.spec.model_json_schema(mode="validation", schema_generator=_NoTitles)
    s.pop("title", None)
    props = s.setdefault("properties", {})
    props["kind"] = {"const": kind.name, "description": "the job kind"}
    s["required"] = ["kind"] + [k for k in s.get("required", []) if k != "kind"]
    head = {"$schema": DIALECT, "title": f"seisd job file: {kind.name}",
            "description": f"{kind.doc}. {SUBMIT_ALSO_CHECKS}".lstrip(". ")}
    return {**head, **s}


def job_schema(names: list[str] | None = None) -> dict[str, Any]:
    """One schema for every kind (all registered ones by default): `kind` picks the kind's schema. Each kind's
    sections are under `$defs` as `<kind>.<Section>`, the kind itself as `<kind>`."""
    names = sorted(names if names is not None else kind_names())
    defs: dict[str, Any] = {}
    for name in names:
        kind = get_kind(name)
        assert kind is not None, name
        one = kind_schema(kind)
        for key in ("$schema", "title"):
            one.pop(key, None)
        for section, body in one.pop("$defs", {}).items():
            defs[f"{name}.{section}"] = _prefixed(body, name)
        defs[name] = _prefixed(one, name)
    return {"$schema": DIALECT, "title": "seisd job file",
            "description": "A job file for any of the kinds listed under `kind`; each kind's keys are in $defs. "
                           + SUBMIT_ALSO_CHECKS,
            "type": "object", "required": ["kind"],
            "properties": {"kind": {"enum": names, "description": "the job kind"}},
            "allOf": [{"if": {"properties": {"kind": {"const": n}}, "required": ["kind"]},
                       "then": {"$ref": f"#/$defs/{n}"}} for n in names],
            "$defs": defs}


def _prefixed(node: Any, kind: str) -> Any:
    """`node` with every local `$ref` pointing at the kind's prefixed `$defs` entries."""
    if isinstance(node, dict):
        out = {k: _prefixed(v, kind) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = f"#/$defs/{kind}.{ref[len('#/$defs/'):]}"
        return out
    if isinstance(node, list):
        return [_prefixed(v, kind) for v in node]
    return node


def documents(names: list[str] | None = None) -> dict[str, str]:
    """File name -> text of every schema file: `<kind>.json` per kind and `job.json` for all of them."""
    names = sorted(names if names is not None else kind_names())
    out = {f"{n}.json": _text(kind_schema(get_kind(n))) for n in names}  # type: ignore[arg-type]
    out["job.json"] = _text(job_schema(names))
    return out


BUILT_IN = ("custom", "extract", "import", "predict", "suggest", "train")  # the kinds whose schemas docs/schemas/ holds


def _text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def stale(folder: Path) -> list[str]:
    """The schema files of `folder` that differ from what the code generates now (or are missing, or extra)."""
    want = documents(list(BUILT_IN))
    have = {p.name for p in folder.glob("*.json")} if folder.is_dir() else set()
    out = [n for n, text in want.items() if not (folder / n).is_file() or (folder / n).read_text() != text]
    return sorted(out + [n for n in have - set(want)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m daemon.kinds.job_schemas", description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="where the schema files go (docs/schemas)")
    ap.add_argument("--check", action="store_true", help="only say whether the files are up to date")
    a = ap.parse_args(argv)
    if a.check:
        bad = stale(a.folder)
        if bad:
            print(f"stale job schemas in {a.folder}: {', '.join(bad)}; regenerate them with "
                  f"`python -m daemon.kinds.job_schemas {a.folder}`", file=sys.stderr)
            return 1
        return 0
    a.folder.mkdir(parents=True, exist_ok=True)
    for stray in stale(a.folder):
        if stray not in documents(list(BUILT_IN)):
            (a.folder / stray).unlink()
    for name, text in documents(list(BUILT_IN)).items():
        (a.folder / name).write_text(text)
    print(f"wrote {len(BUILT_IN) + 1} schemas to {a.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
