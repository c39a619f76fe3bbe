"""ViewerManager: the daemon's side of viewer servers (being written: this placeholder refuses every start).

Contract with daemon/server.py and daemon/api.py (keep it):
  ViewerManager(home, settings: ViewerSettings, publish)   publish(topic, type, data, job_id=None, store=True)
  .start(name, args) -> viewer dict      .stop(name) -> viewer dict     .restart(name, args|None) -> viewer dict
  .status(name) -> viewer dict           .status_all() -> [viewer dict] .logs(name, offset, max_bytes) -> dict
  .poll()            called from the daemon's loop every tick: cheap, never blocks
  .adopt_or_clean()  at daemon start       .stop_all()  at daemon stop
Errors are client.protocol.ProtocolError (not_found for an unknown viewer name, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from client.protocol import ErrorCode, ProtocolError


class ViewerManager:
    def __init__(self, home: Path, settings: Any, publish: Callable[..., None]):
        self.home, self.settings, self.publish = home, settings, publish

    def start(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "viewers are not available in this build yet")

    def stop(self, name: str) -> dict[str, Any]:
        return self.start(name, {})

    def restart(self, name: str, args: dict[str, Any] | None) -> dict[str, Any]:
        return self.start(name, args or {})

    def status(self, name: str) -> dict[str, Any]:
        return self.start(name, {})

    def status_all(self) -> list[dict[str, Any]]:
        return []

    def logs(self, name: str, offset: int, max_bytes: int) -> dict[str, Any]:
        return self.start(name, {})

    def poll(self) -> None:
        pass

    def adopt_or_clean(self) -> None:
        pass

    def stop_all(self) -> None:
        pass
