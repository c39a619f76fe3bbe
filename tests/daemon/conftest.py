"""Fixtures for tests that run a real seisd (see tests/harness.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import RunningDaemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    """A daemon of its own for one test: for tests that kill, restart or stop it."""
    with RunningDaemon(tmp_path / "home") as d:
        yield d


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """One daemon for a whole test module, for tests that leave it running and healthy."""
    with RunningDaemon(tmp_path_factory.mktemp("seisd") / "home") as d:
        yield d


@pytest.fixture(scope="module")
def demo(shared_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """The module's shared daemon with the 32^3 synthetic survey of test_train_job.py imported as 'demo'."""
    from tests.daemon.test_train_job import import_demo

    import_demo(shared_daemon.client, tmp_path_factory.mktemp("synth"))
    yield shared_daemon
