"""HealthChecker: HTTP GETs of viewer URLs in a background thread, so the daemon's loop never waits on a socket.

The loop registers what to check (`watch(name, url, interval_s)`) and reads the latest answer (`latest(name)`),
both under a lock; the thread does the GETs. A check is healthy when the server answers with any HTTP status below
500 within CHECK_TIMEOUT_S.
"""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

CHECK_TIMEOUT_S = 3.0
WAKE_S = 0.1


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    when: float        # time.monotonic() of the answer
    error: str | None  # why it failed


def check_url(url: str, timeout: float = CHECK_TIMEOUT_S) -> HealthResult:
    """One blocking GET of url (for the checker thread, and for adoption at daemon start)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read(1024)
            return HealthResult(r.status < 500, time.monotonic(), None if r.status < 500 else f"HTTP {r.status}")
    except urllib.error.HTTPError as exc:
        return HealthResult(exc.code < 500, time.monotonic(), None if exc.code < 500 else f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        return HealthResult(False, time.monotonic(), str(getattr(exc, "reason", exc)))


@dataclass
class _Target:
    url: str
    interval_s: float
    due: float = 0.0
    generation: int = 0


class HealthChecker:
    """A daemon thread that GETs every watched URL every interval_s and keeps the latest result per name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}
        self._results: dict[str, tuple[int, HealthResult]] = {}
        self._generation = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer-health", daemon=True)
        self._thread.start()

    def watch(self, name: str, url: str, interval_s: float) -> None:
        """Check url from now on (replacing an earlier watch of name and forgetting its results)."""
        with self._lock:
            self._generation += 1
            self._targets[name] = _Target(url, interval_s, 0.0, self._generation)
            self._results.pop(name, None)

    def set_interval(self, name: str, interval_s: float) -> None:
        with self._lock:
            if name in self._targets:
                self._targets[name].interval_s = interval_s

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._targets.pop(name, None)
            self._results.pop(name, None)

    def latest(self, name: str) -> HealthResult | None:
        """The newest result for the current watch of name, or None before the first answer."""
        with self._lock:
            return self._results.get(name, (0, None))[1]

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(WAKE_S):
            now = time.monotonic()
            with self._lock:
                due = [(n, t.url, t.generation) for n, t in self._targets.items() if now >= t.due]
                for n, _, _ in due:
                    self._targets[n].due = now + self._targets[n].interval_s
            for name, url, gen in due:
                result = check_url(url)
                with self._lock:
                    t = self._targets.get(name)
                    if t is not None and t.generation == gen:  # not re-watched (restarted) while we asked
                        self._results[name] = (gen, result)
