"""HeadlessChromium: load a page in Debian's chromium and read it back, over the DevTools protocol.

Why not `chromium --screenshot URL`: a Bokeh page gets its plots over a websocket after load, and the one-shot
screenshot is taken before they arrive (blank page). Here we drive the browser over its DevTools websocket (tornado's
client, already installed with Bokeh): navigate, wait until the page holds the expected number of drawn canvases
(Bokeh draws inside shadow roots, so the count walks them), then take the screenshot, and evaluate an expression in
the page when asked.

The browser has no network beyond this machine: every host name but 127.0.0.1 resolves to nothing
(--host-resolver-rules), and every request the page makes is recorded (the Network domain), so a test can show that
a page needs nothing from the internet.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado import ioloop
from tornado.websocket import websocket_connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--remote-debugging-port=0",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]

# Canvases drawn with something (a non-zero size), found through every shadow root of the page.
COUNT_CANVASES = """(() => {
  let n = 0;
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 0 && el.height > 0) n += 1;
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return n;
})()"""


# The tick labels of every Bokeh axis as the page draws them: [{label, ticks: [text, ...]}], in document order.
AXIS_TICKS = """(() => {
  const out = [];
  const walk = (view) => {
    if (view.model && view.model.type === 'LinearAxis') {
      const ticks = view.tick_coords.major[view.dimension];
      out.push({label: view.model.axis_label, ticks: view.compute_labels(ticks).items.map((t) => t.text)});
    }
    if (typeof view.children === 'function') for (const child of view.children()) walk(child);
  };
  for (const root of Bokeh.index.roots) walk(root);
  return out;
})()"""


@dataclass
class Rendered:
    """What a page load gave: the screenshot, the drawn canvases, the value asked for, every URL requested."""

    png: bytes
    canvases: int
    value: Any = None
    requests: list[str] = field(default_factory=list)
    path: Path | None = None  # where the caller saved the screenshot


def find_chromium() -> str | None:
    """The chromium program, or None when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """A headless chromium process for one test; use as a context manager."""

    def __init__(self, program: str):
        self.profile = Path(tempfile.mkdtemp(prefix="seisd-chromium-"))
        self.proc = subprocess.Popen([program, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = self._devtools_port()
        self._next_id = 0
        self.requests: list[str] = []

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _devtools_port(self, timeout: float = 30.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode} at start")
            time.sleep(0.05)
        raise RuntimeError(f"chromium wrote no {marker.name} within {timeout:g} s")

    def _page_socket(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"]

    def render(self, url: str, canvases: int, timeout: float = 30.0, evaluate: str | None = None) -> Rendered:
        """Load url, wait until at least `canvases` canvases are drawn (or timeout), evaluate `evaluate` in the
        page when given; return the screenshot, the canvases, the value and the URLs the page requested."""
        return ioloop.IOLoop().run_sync(lambda: self._render(url, canvases, timeout, evaluate), timeout=timeout + 15)

    async def _render(self, url: str, canvases: int, timeout: float, evaluate: str | None) -> Rendered:
        ws = await websocket_connect(self._page_socket(), max_message_size=64 * 1024 * 1024)
        self.requests: list[str] = []
        try:
            await self._call(ws, "Network.enable")
            await self._call(ws, "Page.navigate", url=url)
            deadline, seen = time.monotonic() + timeout, 0
            while time.monotonic() < deadline:
                res = await self._call(ws, "Runtime.evaluate", expression=COUNT_CANVASES, returnByValue=True)
                seen = int(res.get("result", {}).get("value") or 0)
                if seen >= canvases:
                    break
                await _sleep(0.2)
            await _sleep(1.0)  # let the last data frames paint
            shot = await self._call(ws, "Page.captureScreenshot", format="png")
            value = None
            if evaluate is not None:
                res = await self._call(ws, "Runtime.evaluate", expression=evaluate, returnByValue=True)
                if "exceptionDetails" in res:
                    raise RuntimeError(f"the page could not evaluate the expression: {res['exceptionDetails']}")
                value = res.get("result", {}).get("value")
            await self._call(ws, "Network.disable")
            return Rendered(base64.b64decode(shot["data"]), seen, value, list(self.requests))
        finally:
            ws.close()

    async def _call(self, ws: Any, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        my_id = self._next_id
        await ws.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = await ws.read_message()
            if msg is None:
                raise RuntimeError(f"chromium closed the DevTools connection during {method}")
            doc = json.loads(msg)
            if doc.get("method") in ("Network.requestWillBeSent", "Network.webSocketCreated"):
                self.requests.append(doc["params"].get("request", {}).get("url") or doc["params"].get("url", ""))
            if doc.get("id") == my_id:
                if "error" in doc:
                    raise RuntimeError(f"{method}: {doc['error']}")
                return doc.get("result", {})


async def _sleep(seconds: float) -> None:
    import asyncio
    await asyncio.sleep(seconds)
