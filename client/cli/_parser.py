"""seisctl's argument parser: argparse's, with "did you mean" for a mistyped command, subcommand or choice.

argparse checks every value that has choices (a command, a subcommand, `--state`, `--format` ...) in one place,
`_check_value`; this parser words that error itself: the closest choice first, then every one.
"""
from __future__ import annotations

import argparse
import difflib
from typing import Any, Iterable


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`(did you mean 'list'?) ` for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """The message for a value that is not one of `choices`: the closest one, then all of them."""
    choices = [str(c) for c in choices]
    return f"unknown {what} {value!r}{did_you_mean(value, choices)}; known: {', '.join(choices)}"


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose "invalid choice" error names the closest choice. Subparsers are made of the
    same class (argparse's add_subparsers uses the parser's own class)."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            what = "command" if isinstance(action, argparse._SubParsersAction) else "value"
            raise argparse.ArgumentError(action, unknown_choice(what, str(value), map(str, action.choices)))
