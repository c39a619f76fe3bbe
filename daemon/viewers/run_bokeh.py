"""The example-set and survey viewer process: `python -m daemon.viewers.run_bokeh --home HOME --port N ...`.

A Bokeh server with two pages: /examples (daemon/viewers/examples_page.py) and /survey
(daemon/viewers/survey_page.py); / lists them. Browsers may open its websocket only from the origins
localhost:PORT and 127.0.0.1:PORT (and the --origin ones): through an SSH tunnel, forward the same port number
(docs/viewers.md).
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from daemon.common.lifeline import die_with_parent, ignore_sigint


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m daemon.viewers.run_bokeh")
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--parent-pid", required=True, type=int)
    ap.add_argument("--origin", action="append", default=[], help="another host:port browsers may connect from")
    a = ap.parse_args(argv)
    die_with_parent(a.parent_pid)
    ignore_sigint()
    # late imports: Bokeh and the pages are slow to import, and the guards above must come first
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    from daemon.viewers import examples_page, survey_page
    apps = {"/examples": Application(FunctionHandler(examples_page.make_document(a.home))),
            "/survey": Application(FunctionHandler(survey_page.make_document(a.home)))}
    hosts = {"localhost", "127.0.0.1", a.host}
    if a.host in ("0.0.0.0", "::", ""):  # reachable by this machine's names too (the daemon reports the fqdn)
        hosts |= {socket.getfqdn(), socket.gethostname()}
    origins = [f"{h}:{a.port}" for h in sorted(hosts)] + a.origin
    # our own front page: Bokeh's loads its style and logos from the internet (daemon/viewers/index_page.py)
    from daemon.viewers.index_page import IndexHandler
    server = Server(apps, address=a.host, port=a.port, allow_websocket_origin=origins, num_procs=1, use_index=False,
                    extra_patterns=[(r"/", IndexHandler, {"home": a.home})])
    server.start()
    print(f"example-set and survey viewer at http://{a.host}:{a.port}/ (pages /examples and /survey)", flush=True)
    server.io_loop.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
