"""seisctl survey import | list | info | rm, picks import, examples extract | import | export | list | info | ...
(data commands).

Options whose default is the daemon's (a job key the daemon fills in) default to None here and are left out of
the job unless given; their help text names the daemon's default."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from client.cli._common import (EXIT_OK, Command, Info, Out, Remove, _table, client_of, command, given, group,
                                print_yaml)
from client.cli._follow import submit_and_follow

group("survey", "surveys: import SEG-Y, list, info, rm")


@command
class SurveyImport(Command):
    """Submits an `import` job for a post-stack 3D SEG-Y `file` (made absolute) as survey `--name`. `--volume` the
    volume (attribute) name (default `seismic`); `--add` adds the volume to the existing survey; `--iline`/`--xline`
    the header bytes of the inline and crossline numbers (default 189, 193); `--endian` (default `auto`);
    `--sample-unit` (default `ms`); `--offset N` imports that one offset of a pre-stack file. Options not given
    are left out of the job: the daemon's defaults (above) apply."""

    name, help = "survey import", "import a post-stack 3D SEG-Y as a survey (a job; waits unless --detach)"
    runs_job = True
    keys = {"survey": "--name {}", "segy.file": "FILE", "segy.volume": "--volume {}", "segy.add_volume": "--add",
            "segy.iline": "--iline {}", "segy.xline": "--xline {}", "segy.endian": "--endian {}",
            "segy.sample_unit": "--sample-unit {}", "segy.offset": "--offset {}"}

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("file")
        p.add_argument("--name", required=True, help="survey name")
        p.add_argument("--volume", help="volume (attribute) name (default seismic)")
        p.add_argument("--add", action="store_true", default=None,
                       help="add the volume to the existing survey NAME")
        p.add_argument("--iline", type=int, help="inline number byte (default 189)")
        p.add_argument("--xline", type=int, help="crossline number byte (default 193)")
        p.add_argument("--endian", choices=["auto", "big", "little"])
        p.add_argument("--sample-unit", choices=["ms", "s", "m"])
        p.add_argument("--offset", type=int, help="import this one offset of a pre-stack file")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        segy = {"file": str(Path(a.file).resolve()), **given(
            volume=a.volume, add_volume=a.add, iline=a.iline, xline=a.xline, endian=a.endian,
            sample_unit=a.sample_unit, offset=a.offset)}
        return submit_and_follow(a, out, {"kind": "import", "survey": a.name, "segy": segy})


@command
class SurveyList(Command):
    """A table; `--json` `{"surveys": [summary]}`."""

    name, help = "survey list", "surveys in the home"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        rows = client_of(a).call("survey.list")["surveys"]
        out.emit({"surveys": rows}, lambda: _table(
            ["NAME", "SHAPE", "INLINES", "CROSSLINES", "SAMPLES", "VOLUMES", "PICKS"],
            [[r["name"], " x ".join(map(str, r.get("shape", []))), "-".join(map(str, r.get("inlines", []))),
              "-".join(map(str, r.get("crosslines", []))),
              "-".join(f"{v:g}" for v in r.get("samples", [])) + f" {r.get('sample_unit', '')}",
              ",".join(r.get("volumes", [])), ",".join(r.get("picks", [])) or "-"] for r in rows]))
        return EXIT_OK


command(Info("survey info", "geometry, volumes, statistics, pick sets", "survey.info",
             "The `survey.info` result (YAML, or JSON with `--json`)."))
command(Remove("survey rm", "remove a survey", "survey.rm", "survey",
               "`--json` `{\"removed\": NAME}`; refused (exit 5) while a job uses it."))

group("picks", "import picks into a survey")


@command
class PicksImport(Command):
    """Submits an `import` job with point files (inline, crossline, z; docs/formats.md): one file per class, the
    class named by `--pattern` (a regex with `(?P<name>...)` over the file name; default
    `multi_(?P<name>.+)_ilxl`), or one file with a 0-based `--class-column` of integer class ids. `--set` the pick
    set (default `default`); `--z-unit` (default `auto`); `--drop-outside` drops points outside the survey instead
    of refusing the files; `--add` adds the points to the existing set `--set` (its points kept; a position picked
    again takes the new class) and prints how many were added. Options not given are left out of the job: the
    daemon's defaults (above) apply."""

    name, help = "picks import", "point files (inline, crossline, z): one per class, or with a class column"
    runs_job = True
    keys = {"survey": "SURVEY", "picks.files": "FILES", "picks.set": "--set {}", "picks.class_pattern": "--pattern {}",
            "picks.class_column": "--class-column {}", "picks.z_unit": "--z-unit {}",
            "picks.drop_outside": "--drop-outside", "picks.add": "--add"}

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("survey")
        p.add_argument("files", nargs="+")
        p.add_argument("--set", help="pick set name (default: default)")
        p.add_argument("--pattern", help="regex with (?P<name>...) taking the class from the file name "
                       "(default multi_(?P<name>.+)_ilxl)")
        p.add_argument("--class-column", type=int, help="0-based column of integer class ids")
        p.add_argument("--z-unit", choices=["ms", "s", "sample", "auto"])
        p.add_argument("--drop-outside", action="store_true", default=None,
                       help="drop points outside the survey instead of refusing")
        p.add_argument("--add", action="store_true", default=None,
                       help="add to the existing set, keeping its points (a position picked again: the new class)")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        picks = {"files": [str(Path(f).resolve()) for f in a.files], **given(
            set=a.set, z_unit=a.z_unit, drop_outside=a.drop_outside, class_column=a.class_column,
            class_pattern=a.pattern or None, add=a.add)}
        code = submit_and_follow(a, out, {"kind": "import", "survey": a.survey, "picks": picks})
        if code == EXIT_OK and not out.json and not a.detach:
            r = client_of(a).show(a.job_id).get("result") or {}
            line = f"pick set {r.get('set')}: {r.get('points')} points"
            if (m := r.get("add")):
                line += (f" ({m['added']} added, {m['kept']} kept, {m['replaced']} picked again and replaced by the "
                         f"new pick, {m['changed_class']} of them with another class; {m['new_classes']} new "
                         "classes)")
            print(line)
        return code


group("examples", "example sets: extract, import, export, list, info, rename, lock, unlock, rm, default, note",
      "Every command but `extract`, `import` and `export` (jobs) calls the `examples` operation: `list` prints a "
      "table (`*` marks the default set), `rm` prints `removed example set NAME`, the rest print the set as YAML. "
      "`--json` prints the "
      "operation's result (`{\"examples\", \"default\"}` for `list`, `{\"removed\"}` for `rm`, else the set). "
      "`lock` protects a set from `rm`, `rename` and being overwritten; refused actions exit 5 (`conflict`).")


@command
class ExamplesExtract(Command):
    """Submits an `extract` job writing crops around the picks into example set `name`: `--survey` (repeatable,
    required), `--picks` (the pick set of each survey, default `default`), `--volume` (a channel, repeatable;
    default `seismic`), `--size` (2 numbers, or 3 for `3d`; required), `--orientation` (default `inline`),
    `--notes`. Options not given are left out of the job: the daemon's defaults (above) apply."""

    name, help = "examples extract", "crops around picks into an example set (a job)"
    runs_job = True
    keys = {"examples": "NAME", "sources.survey": "--survey {}", "sources.picks": "--picks {}",
            "sources.volumes": "--volume {}", "crop.size": "--size {}", "crop.orientation": "--orientation {}",
            "notes": "--notes {}"}

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--survey", action="append", required=True, help="source survey (repeatable)")
        p.add_argument("--picks", help="pick set of each survey")
        p.add_argument("--volume", action="append", help="volume as a channel (repeatable; default seismic)")
        p.add_argument("--size", type=int, nargs="+", required=True, help="crop size: 2 numbers, or 3 for 3d")
        p.add_argument("--orientation", choices=["inline", "crossline", "time", "3d"])
        p.add_argument("--notes")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        job = {"kind": "extract", "examples": a.name, **given(notes=a.notes),
               "sources": [{"survey": s, **given(picks=a.picks, volumes=a.volume)} for s in a.survey],
               "crop": {"size": a.size, **given(orientation=a.orientation)}}
        return submit_and_follow(a, out, job)


@command
class ExamplesImport(Command):
    """Submits an `opendtect` job reading OpendTect example set `file` (an HDF5 training set written by OpendTect's
    machine-learning plugin; made absolute) into seisd example set `--name`. `--survey NAME` also lays the examples
    out as a survey with pick set `examples`, which a train job learns from (docs/opendtect.md); `--overwrite`
    replaces an unlocked set of that name; `--notes`."""

    name, help = "examples import", "an OpendTect example set (HDF5) into an example set (a job)"
    runs_job = True

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("file")
        p.add_argument("--name", required=True, help="example set name")
        p.add_argument("--survey", help="also lay the examples out as this survey, to train on")
        p.add_argument("--overwrite", action="store_true", default=None, help="replace an unlocked set NAME")
        p.add_argument("--notes")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        job = {"kind": "opendtect", "action": "import", "file": str(Path(a.file).resolve()), "examples": a.name,
               **given(survey=a.survey, overwrite=a.overwrite, notes=a.notes)}
        return submit_and_follow(a, out, job)


@command
class ExamplesExport(Command):
    """Submits an `opendtect` job writing example set `name` to `file` (made absolute; written by the daemon) in
    OpendTect's example-set layout, which `examples import` reads back as the same set. `--overwrite` replaces
    an existing file."""

    name, help = "examples export", "an example set as an OpendTect example set (HDF5; a job)"
    runs_job = True

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("file")
        p.add_argument("--overwrite", action="store_true", default=None, help="replace the file")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        job = {"kind": "opendtect", "action": "export", "examples": a.name, "file": str(Path(a.file).resolve()),
               **given(overwrite=a.overwrite)}
        return submit_and_follow(a, out, job)


class ExamplesAction(Command):
    """One action of the `examples` operation on the sets in the home."""

    def __init__(self, action: str, help: str, *args: tuple[str, str | None]):
        self.action, self.args = action, args  # (dest, metavar) of each positional argument
        self.name, self.help, self._doc = f"examples {action}", help, ""  # the group's doc says it all

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        for dest, metavar in self.args:
            p.add_argument(dest, **({"metavar": metavar} if metavar else {}))

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call("examples", action=self.action, name=getattr(a, "name", None),
                              value=getattr(a, "value", None))
        if self.action == "list":
            out.emit(r, lambda: _table(["NAME", "EXAMPLES", "CROP", "CLASSES", "LOCKED", "DEFAULT", "NOTES"],
                                       [_example_row(e) for e in r["examples"]]))
        elif self.action == "rm":
            out.emit(r, lambda: print(f"removed example set {a.name}"))
        else:
            out.emit(r, lambda: print_yaml(r))
        return EXIT_OK


def _example_row(e: dict[str, Any]) -> list[Any]:
    if e.get("broken"):  # listed with its error, so a damaged file never vanishes from the table
        return [e["name"], "-", "-", "-", "", "*" if e.get("default") else "", f"BROKEN: {e.get('error', '')}"[:120]]
    return [e["name"], e["count"], _crop_text(e["crop"]), len(e["classes"]), "yes" if e["locked"] else "",
            "*" if e["default"] else "", (e["notes"] or "")[:40]]


def _crop_text(crop: Any) -> str:
    if isinstance(crop, dict):
        return "x".join(map(str, crop.get("size", []))) + f" {crop.get('orientation', '')}"
    return str(crop)


_NAME = ("name", None)
command(ExamplesAction("list", "example sets in the home"))
for _action, _help in (("info", "metadata"), ("lock", "protect from rm, rename, overwrite"), ("unlock", "unprotect"),
                       ("rm", "remove"),
                       ("default", "make it the default set (what a train job naming neither data.survey nor "
                                   "data.examples trains on)")):
    command(ExamplesAction(_action, _help, _NAME))
command(ExamplesAction("rename", "rename a set", _NAME, ("value", "new_name")))
command(ExamplesAction("note", "replace a set's notes", _NAME, ("value", "text")))
