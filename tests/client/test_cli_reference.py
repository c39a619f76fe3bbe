"""docs/cli.md's generated parts (usage, global options, every command) are in step with seisctl's parser."""
from __future__ import annotations

import argparse
import difflib

from client.cli import COMMANDS, build_parser
from client.cli.reference import blocks, render
from tests.harness import ROOT

DOC = ROOT / "docs" / "cli.md"


def test_docs_cli_md_is_in_step_with_the_parser() -> None:
    text = DOC.read_text()
    fresh = render(text)
    diff = "".join(difflib.unified_diff(text.splitlines(True), fresh.splitlines(True), "docs/cli.md",
                                        "from the parser", n=1))
    assert fresh == text, ("docs/cli.md is not in step with seisctl's parser; run "
                           f"`python -m client.cli.reference --write docs/cli.md`:\n{diff}")


def test_every_command_and_option_is_in_the_reference() -> None:
    parts = blocks()
    for name in COMMANDS:
        assert f"seisctl {name} [-h]" in parts["commands"], name

    def options(p: argparse.ArgumentParser) -> set[str]:
        found = set()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sp in action.choices.values():
                    found |= options(sp)
            elif not isinstance(action, argparse._HelpAction):
                found |= set(action.option_strings)
        return found
    top = build_parser()
    assert {o for a in top._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            for o in a.option_strings} == {"--json", "--home", "--timeout"}
    for opt in ("--json", "--home", "--timeout"):
        assert f"| `{opt}" in parts["global"]
    missing = {o for o in options(top) - {"--json", "--home", "--timeout"} if f"`{o}" not in parts["commands"]
               and f", {o}" not in parts["commands"]}
    assert not missing


def test_render_replaces_only_the_generated_parts() -> None:
    text = ("# hand\n\n<!-- BEGIN GENERATED global: x -->\nstale\n<!-- END GENERATED global -->\nprose\n"
            "<!-- BEGIN GENERATED commands -->\n<!-- END GENERATED commands -->\ntail\n")
    out = render(text)
    assert out.startswith("# hand\n\n<!-- BEGIN GENERATED global: x -->\n") and out.endswith("-->\ntail\n")
    assert "stale" not in out and "\nprose\n" in out and "seisctl survey import [-h]" in out
    assert render(out) == out
