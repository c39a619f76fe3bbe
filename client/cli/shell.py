"""seisctl completion bash | zsh: the shell's completion script, made by shtab from seisctl's own parser."""
from __future__ import annotations

import argparse

from client.cli._common import EXIT_OK, Command, Out, command

SHELLS = ("bash", "zsh")


@command
class Completion(Command):
    """Print the completion script of `shell` (commands, subcommands, options and their choices). Load it in the
    running shell with `source <(seisctl completion bash)` (bash) or `source <(seisctl completion zsh)` (zsh), or
    install it: `seisctl completion bash > ~/.local/share/bash-completion/completions/seisctl`, or
    `seisctl completion zsh > "${fpath[1]}/_seisctl"`. `--json`: `{"shell", "script"}`."""

    name, help = "completion", "print the shell completion script (bash or zsh)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("shell", choices=SHELLS)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        import shtab

        from client.cli import build_parser

        script = shtab.complete(build_parser(), shell=a.shell)
        out.emit({"shell": a.shell, "script": script}, lambda: print(script, end=""))
        return EXIT_OK
