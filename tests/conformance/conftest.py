"""Fixtures of the conformance suite: a daemon started as a user starts one, reached only through raw frames."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.conformance.wire import Daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon of a fresh home named by SEISD_HOME (no --home), with the test-only job kind `test.steps`."""
    tmp = tmp_path_factory.mktemp("conformance")
    d = Daemon({"SEISD_HOME": str(tmp / "home")}, log=tmp / "seisd.out")
    with d:
        yield d


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance-files")
