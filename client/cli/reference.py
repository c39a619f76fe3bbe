"""docs/cli.md's reference parts, generated from seisctl's parser and its command classes.

    python -m client.cli.reference                         print the generated parts
    python -m client.cli.reference --write docs/cli.md     replace them in the file
    python -m client.cli.reference --check docs/cli.md     exit 1 (with a diff) if the file is not in step

A generated part sits between `<!-- BEGIN GENERATED NAME ... -->` and `<!-- END GENERATED NAME -->`; everything
outside them is hand-written. tests/client/test_cli_reference.py fails when docs/cli.md is not in step.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from pathlib import Path

from client.cli import GLOBAL_DOC, ORDER, build_parser
from client.cli._common import COMMANDS, GROUPS, Command

WIDTH = 110  # usage lines wrap here, whatever the terminal
PROSE = 115  # prose paragraphs with a longer line are refilled to this width
COMMAND = "python -m client.cli.reference --write docs/cli.md"


def _usage(p: argparse.ArgumentParser) -> str:
    fmt = argparse.HelpFormatter(p.prog, width=WIDTH)
    fmt.add_usage(p.usage, p._actions, p._mutually_exclusive_groups, prefix="")
    return fmt.format_help().strip()


def _wrap(text: str) -> str:
    """Refill each paragraph of `text` that has a line longer than PROSE (docs written as one long string)."""
    paras = text.split("\n\n")
    return "\n\n".join(textwrap.fill(p, PROSE, break_long_words=False, break_on_hyphens=False)
                       if max(map(len, p.splitlines()), default=0) > PROSE else p for p in paras)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<")


def _arguments(p: argparse.ArgumentParser) -> list[str]:
    """The markdown table of a parser's arguments (none: no table)."""
    fmt = argparse.HelpFormatter(p.prog, width=WIDTH)
    rows = []
    for act in p._actions:
        if isinstance(act, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        default = "" if act.default in (None, False, argparse.SUPPRESS) or not act.option_strings else \
            f"`{act.default:g}`" if isinstance(act.default, float) else f"`{act.default}`"
        meaning = (act.help or "") + (" (required)" if act.required and act.option_strings else "")
        rows.append(f"| `{fmt._format_action_invocation(act)}` | {default} | {_cell(meaning.strip())} |")
    return ["| argument | default | meaning |", "|----------|---------|---------|", *rows] if rows else []


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's parser by command name ("survey import")."""
    top = build_parser()
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        for act in p._actions:
            if isinstance(act, argparse._SubParsersAction):
                for name, sp in act.choices.items():
                    key = " ".join(path + [name])
                    if key in COMMANDS:
                        found[key] = sp
                    else:
                        walk(sp, path + [name])
    walk(top, [])
    return top, found


def _command(name: str, c: Command, p: argparse.ArgumentParser, level: str) -> list[str]:
    lines = [f"{level} {name}", "", "```", _usage(p), "```", "", c.help[:1].upper() + c.help[1:] + ".", ""]
    table = _arguments(p)
    if table:
        lines += table + [""]
    if c.doc:
        lines += [_wrap(c.doc), ""]
    return lines


def blocks() -> dict[str, str]:
    """The generated parts of docs/cli.md by name: `global` (usage and global options), `commands`."""
    top, parsers = _parsers()
    glob = ["```", _usage(top), "```", "", *_arguments(top), "", _wrap(GLOBAL_DOC)]
    in_order = [n for top_name in ORDER for n in COMMANDS if n == top_name or n.startswith(top_name + " ")]
    job_cmds = ", ".join(f"`{n}`" for n in in_order if COMMANDS[n].runs_job)
    cmds = [_wrap(f"Every command below is as `seisctl COMMAND --help` prints it (`python -m client.cli` is the "
                  f"same program). Commands that run a job ({job_cmds}) all take `--priority N` (higher runs first; "
                  "default the job file's, else 0) and `--detach` (print the job id and return at once); without "
                  "`--detach` they wait with a progress bar on stderr and exit with the job's outcome (0, 1, 4 or 6; "
                  "see Exit codes), and `--json` prints the final `show` record (`{\"id\", \"state\": \"queued\"}` "
                  "with `--detach`)."), ""]
    for top_name in ORDER:
        if top_name in GROUPS:
            g = GROUPS[top_name]
            members = [n for n in COMMANDS if n.startswith(top_name + " ")]
            cmds += [f"### {top_name}: {' | '.join(n.split(' ', 1)[1] for n in members)}", "",
                     g.help[:1].upper() + g.help[1:] + ".", ""]
            if g.doc:
                cmds += [_wrap(g.doc), ""]
            for n in members:
                cmds += _command(n, COMMANDS[n], parsers[n], "####")
        else:
            cmds += _command(top_name, COMMANDS[top_name], parsers[top_name], "###")
    return {"global": "\n".join(glob).strip() + "\n", "commands": "\n".join(cmds).strip() + "\n"}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN GENERATED {name}\b[^\n]*-->\n)(.*?)(<!-- END GENERATED {name} -->)", re.DOTALL)


def render(text: str) -> str:
    """`text` (docs/cli.md) with each generated part replaced by what the parser makes now."""
    for name, body in blocks().items():
        pat = _pattern(name)
        if not pat.search(text):
            raise ValueError(f"no generated part {name!r}: mark it with <!-- BEGIN GENERATED {name} (by {COMMAND}) "
                             f"--> and <!-- END GENERATED {name} -->")
        text = pat.sub(lambda m, body=body: m.group(1) + "\n" + body + "\n" + m.group(3), text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m client.cli.reference", description=__doc__.splitlines()[0])
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--write", metavar="FILE", help="replace the generated parts of FILE (docs/cli.md)")
    how.add_argument("--check", metavar="FILE", help="exit 1 with a diff when FILE's generated parts are stale")
    a = ap.parse_args(argv)
    if not (a.write or a.check):
        print("\n".join(blocks().values()), end="")
        return 0
    path = Path(a.write or a.check)
    text = path.read_text()
    fresh = render(text)
    if a.write:
        if fresh != text:
            path.write_text(fresh)
        return 0
    if fresh != text:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), str(path),
                                                   f"{path} (from the parser)"))
        print(f"{path} is not in step with seisctl's parser: run {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
