"""The viewer's front page (/): links to every survey and example set of the home, in plain HTML with inline style.

Bokeh's own index page loads its style sheets, fonts and logos from bokeh.org and Google; on a machine without
internet access it comes out unstyled and slow. This page and the Bokeh pages (which get BokehJS from the server's
own /static route, out of the installed bokeh package) need nothing but this server.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from tornado.web import RequestHandler

from daemon.common.home import examples_folder, predictions_folder, surveys_folder

STYLE = """body { font-family: sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
li { margin: 0.2em 0; } a { color: #1f77b4; } .none { color: #777; }"""


def index_html(home: Path) -> str:
    """The page: surveys, predictions (each opened on its survey), example sets."""
    surveys = sorted(p.parent.name for p in surveys_folder(home).glob("*/survey.json"))
    sets = sorted(p.stem for p in examples_folder(home).glob("*.h5"))
    preds = [(p.name, _survey_of(p)) for p in sorted(predictions_folder(home).glob("*")) if p.is_dir()]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>seisd viewer</title>"
            f"<style>{STYLE}</style></head><body><h1>seisd viewer</h1>"
            f"<h2><a href=\"survey\">Surveys</a></h2>"
            + _links([(f"survey?name={quote(s)}", s) for s in surveys],
                     "no survey yet: seisctl survey import FILE.sgy --name NAME")
            + "<h2>Predictions</h2>"
            + _links([(f"survey?name={quote(s)}&amp;prediction={quote(p)}", f"{p} (survey {s})") if s in surveys
                      else (f"survey?prediction={quote(p)}", p) for p, s in preds],
                     "no prediction yet: seisctl predict MODEL SURVEY")
            + "<h2><a href=\"examples\">Example sets</a></h2>"
            + _links([(f"examples?set={quote(s)}", s) for s in sets], "no example set yet: seisctl examples extract")
            + "</body></html>")


def _links(items: list[tuple[str, str]], empty: str) -> str:
    if not items:
        return f"<p class='none'>{html.escape(empty)}</p>"
    return "<ul>" + "".join(f'<li><a href="{href}">{html.escape(text)}</a></li>' for href, text in items) + "</ul>"


def _survey_of(prediction: Path) -> str | None:
    """The survey a prediction folder was made on (its summary.json), None when it does not say."""
    try:
        return str(json.loads((prediction / "summary.json").read_text())["survey"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class IndexHandler(RequestHandler):
    """GET / of the Bokeh server."""

    def initialize(self, home: Path) -> None:
        self.home = home

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(index_html(self.home))
