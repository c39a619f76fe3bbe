"""The model an OpendTect endpoint serves: OpendTect's requests turned into seisd's stream.* operations.

OpendTect starts one apply server per model and keeps it for a whole apply; here the endpoint serves one model at a
time, kept warm in an executor by a stream session (docs/PROTOCOL.md, stream.open and stream.apply). The requests
reach the daemon as any client's do: over the control socket (its own DEALER), so the daemon's loop, its checks,
its scheduling of executors and its limits apply unchanged, and nothing here waits on the loop's thread.

    status       answered here: {"result": "Server online", "pid", "server", "model"}
    parameters   (dgbpy's `outputs` action, its value object; or the keys beside "action") names the model and
                 the outputs: models.info for its classes, then stream.open; the same arguments again reuse the
                 open session
    apply        one array [nattribs, il, xl, z] (or [batch, nattribs, il, xl, z], or [nattribs, traces, z] of a
                 2D line): one stream.apply per block; prediction, probabilities, confidence back in that order
    kill         stream.close: the session ends, the endpoint (and the daemon) go on

A session lost with its executor (stream.apply answers not_found) is opened again once, with the same arguments.
docs/opendtect.md maps every parameter, says which are ignored and what is not supported.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import PurePath, PureWindowsPath
from typing import Any, Callable

import numpy as np
import zmq

from client import protocol as P
from daemon.server.opendtect import framing as F

log = logging.getLogger("seisd")

WAIT_S = 320.0            # a reply from the daemon: its own limit for stream.open and stream.apply is 300 s
OPEN_RETRY_S = 30.0       # executors still starting (`unavailable`): stream.open is tried again this long
APPLY_DIRS = {"In-line": "inline", "Cross-line": "crossline", "Average": "both"}
IGNORED = ("survey", "scales", "infer_size", "data_is2d")   # accepted, not used (docs/opendtect.md says why)
CONFIDENCE, PROBABILITIES = "confidence", "probabilities"


class ApplyError(RuntimeError):
    """A request that cannot be served; the message names the problem and the fix (it becomes the JSON reply)."""

    def __init__(self, message: str, code: str = P.ErrorCode.BAD_ARGS):
        super().__init__(message)
        self.code = code


class DaemonLink:
    """seisd's protocol over the control socket, one request at a time (callers hold the applier's lock)."""

    def __init__(self, endpoint: str, stopping: Callable[[], bool]):
        self.endpoint, self.stopping = endpoint, stopping
        self.zctx = zmq.Context()
        self.sock: zmq.Socket | None = None

    def call(self, op: str, arrays: list[np.ndarray] | None = None, timeout: float = WAIT_S,
             **args: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
        req = P.Request(op=op, args={k: v for k, v in args.items() if v is not None}, arrays=list(arrays or []))
        if self.sock is None:
            self.sock = self.zctx.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.endpoint)
        self.sock.send_multipart(req.encode(), copy=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping():
            if not self.sock.poll(200):
                continue
            reply = P.decode_reply(self.sock.recv_multipart(copy=False))
            if reply.re != req.id:
                continue  # a late answer to a request given up on
            if not reply.ok:
                e = reply.error or {}
                raise ApplyError(str(e.get("message", "error")), str(e.get("code", P.ErrorCode.INTERNAL)))
            return reply.result or {}, reply.arrays
        self.close()  # a late reply must not be read as the next request's
        raise ApplyError("the daemon is stopping" if self.stopping() else f"seisd did not answer {op} within "
                         f"{timeout:g} s", P.ErrorCode.UNAVAILABLE)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def shutdown(self) -> None:
        self.close()
        self.zctx.destroy(linger=0)


@dataclass(frozen=True)
class OpenArgs:
    """The stream.open arguments of the served model: equal arguments reuse the open session."""

    model: str
    outputs: tuple[str, ...]
    device: str
    batch_size: int | None = None
    orientation: str | None = None


@dataclass
class Served:
    """The model being served: its session, classes, and what each apply sends back."""

    args: OpenArgs
    session: str
    classes: list[str]
    prediction: bool
    prob_index: list[int] | None          # class indices of the probabilities sent back; None: none
    confidence: bool
    dtypes: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


class Applier:
    """OpendTect's requests for one endpoint; `handle` is called from the endpoint's connection threads."""

    def __init__(self, link: DaemonLink, default_model: str | None, default_device: str, version: str):
        self.link = link
        self.default_model, self.default_device, self.version = default_model, default_device, version
        self.lock = threading.Lock()   # one model, one session: parameters, applies and kill take turns
        self.served: Served | None = None

    def handle(self, req: F.Request) -> F.Buffers:
        rid, sub = req.request_id, req.sub_id
        action = "apply" if req.is_arrays else str((req.content or {}).get("action"))
        try:
            if action == "apply":
                with self.lock:
                    return F.array_reply(rid, sub, self.apply(req.arrays))
            if action == "status":
                return F.json_reply(rid, sub, self.status())
            with self.lock:
                if action in ("parameters", "outputs"):
                    return F.json_reply(rid, sub, self.parameters(_params(req.content or {})))
                if action == "kill":
                    return F.json_reply(rid, sub, self.kill())
            raise ApplyError(f'invalid action "{action}": one of status, parameters (or outputs), kill, or a '
                             "binary/array apply")
        except ApplyError as exc:
            prefix = {"apply": "Apply error exception", "parameters": "start error exception",
                      "outputs": "start error exception"}.get(action, "Error")
            return F.json_reply(rid, sub, {"result": f"{prefix}: {exc}", "error": {"code": exc.code,
                                                                                 "message": str(exc)}}, str(exc))

    # -- the actions ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s = self.served
        return {"result": "Server online", "pid": os.getpid(), "server": f"seisd {self.version}",
                "model": s.args.model if s else None, "classes": s.classes if s else None}

    def parameters(self, p: dict[str, Any]) -> dict[str, Any]:
        model = _model_name(p) or self.default_model
        if not model:
            raise ApplyError("no model named: give `model` (a seisd model, `seisctl models list`) or `modelfile` "
                             "(its stem names the model) in the parameters, or set opendtect.model")
        classes = list(self.link.call("models.info", name=model)[0].get("classes") or [])
        prediction, prob_index, confidence = _wanted(p, classes)
        outputs = tuple(o for o, on in (("labels", prediction), (PROBABILITIES, prob_index is not None),
                                         (CONFIDENCE, confidence)) if on)
        args = OpenArgs(model, outputs, "cpu" if _yes(p.get("prefercpu")) else self.default_device,
                        _batch(p), _orientation(p.get("apply_dir")))
        dtypes = {k: _dtype(p, key, default) for k, key, default in (
            ("prediction", "preddtype", "uint8"), (PROBABILITIES, "probdtype", "float32"),
            (CONFIDENCE, "confdtype", "float32"))}
        old = self.served
        if old is not None and old.args == args:
            session = old.session
        else:
            self.kill()
            session = self._open(args)
        self.served = Served(args, session, classes, prediction, prob_index, confidence, dtypes,
                             [k for k in IGNORED if k in p])
        return {"result": "Output names received", "model": model, "classes": classes,
                "outputs": [n for n, on in (("prediction", prediction), (PROBABILITIES, prob_index is not None),
                                            (CONFIDENCE, confidence)) if on],
                "ignored": self.served.ignored}

    def apply(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        s = self.served
        if s is None:
            raise ApplyError("no model is loaded: send a parameters request first (it names the model)")
        if len(arrays) != 1:
            raise ApplyError(f"an apply carries one array [nattribs, inline, crossline, z]; got {len(arrays)}")
        data = arrays[0]
        if data.ndim not in (3, 4, 5) or min(data.shape, default=0) < 1:
            raise ApplyError(f"array shape {list(data.shape)} is not [nattribs, inline, crossline, z], [batch, "
                             "nattribs, inline, crossline, z] or [nattribs, traces, z] (a 2D line)")
        items = list(data) if data.ndim == 5 else [data[:, None] if data.ndim == 3 else data]
        per_item = [self._outputs(s, np.ascontiguousarray(block)) for block in items]
        out = [np.stack(parts) if data.ndim == 5 else parts[0] for parts in zip(*per_item)]
        return [a[:, 0] for a in out] if data.ndim == 3 else out

    def kill(self) -> dict[str, Any]:
        s, self.served = self.served, None
        if s is not None:
            try:
                self.link.call("stream.close", session=s.session, timeout=15.0)
            except ApplyError as exc:  # already gone with its executor, or no answer: forgotten all the same
                log.info("opendtect: closing stream session %s: %s", s.session, exc)
        return {"result": "Kill request received"}

    # -- seisd ---------------------------------------------------------------------------------------------------

    def _open(self, a: OpenArgs) -> str:
        options = {"orientation": a.orientation} if a.orientation else None
        deadline = time.monotonic() + OPEN_RETRY_S
        while True:
            try:
                result, _ = self.link.call("stream.open", model=a.model, outputs=list(a.outputs),
                                           batch_size=a.batch_size, device=a.device, options=options)
                return str(result["session"])
            except ApplyError as exc:  # executors that are still starting: wait for them a while
                if exc.code != P.ErrorCode.UNAVAILABLE or "no running executor" not in str(exc) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _outputs(self, s: Served, block: np.ndarray) -> list[np.ndarray]:
        """stream.apply of one block [C, il, xl, z]; the requested outputs, each [n, il, xl, z]."""
        try:
            result, arrays = self.link.call("stream.apply", [block], session=s.session)
        except ApplyError as exc:
            if exc.code != P.ErrorCode.NOT_FOUND:
                raise
            log.info("opendtect: stream session of %s lost (%s); opening it again", s.args.model, exc)
            self.served = s = replace(s, session=self._open(s.args))
            result, arrays = self.link.call("stream.apply", [block], session=s.session)
        got = dict(zip(result["outputs"], arrays))
        out = []
        if s.prediction:
            out.append(got["labels"][None].astype(s.dtypes["prediction"]))
        if s.prob_index is not None:
            out.append(got[PROBABILITIES][s.prob_index].astype(s.dtypes[PROBABILITIES], copy=False))
        if s.confidence:
            out.append(got[CONFIDENCE][None].astype(s.dtypes[CONFIDENCE], copy=False))
        return out


# -- parameters ------------------------------------------------------------------------------------------------------

def _params(content: dict[str, Any]) -> dict[str, Any]:
    """dgbpy's `outputs` action carries the parameters in `value`; the documented form puts them beside `action`."""
    value = content.get("value")
    if isinstance(value, dict):
        return value
    return {k: v for k, v in content.items() if k != "action"}


def _model_name(p: dict[str, Any]) -> str | None:
    if isinstance(p.get("model"), str) and p["model"]:
        return p["model"]
    for key in ("modelfile", "model_file", "filenm"):
        if isinstance(p.get(key), str) and p[key]:
            path = PureWindowsPath(p[key]) if "\\" in p[key] else PurePath(p[key])
            return path.stem
    return None


def _wanted(p: dict[str, Any], classes: list[str]) -> tuple[bool, list[int] | None, bool]:
    """Which outputs the names ask for: `Confidence`; a class name (its probability) or `Probabilities` (all);
    anything else (the target's name) the prediction. No names: the prediction alone."""
    names = next((p[k] for k in ("names", "targetnames", "outputnms", "outputs") if k in p), None)
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        return True, None, False
    lowered = {c.lower(): k for k, c in enumerate(classes)}
    prediction, confidence, probs = False, False, []
    for n in map(str, names):
        if n.lower() == CONFIDENCE:
            confidence = True
        elif n.lower() == PROBABILITIES:
            probs.extend(range(len(classes)))
        elif n.lower() in lowered:
            probs.append(lowered[n.lower()])
        else:
            prediction = True
    return prediction, (sorted(set(probs)) or None), confidence


def _yes(v: Any) -> bool:
    return v is True or (isinstance(v, (int, float)) and v != 0) or str(v).lower() in ("yes", "true", "1")


def _batch(p: dict[str, Any]) -> int | None:
    v = p.get("defaultbatchsz", p.get("batch_size"))
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65536:
        raise ApplyError(f"defaultbatchsz: expected an integer 1..65536, got {v!r}")
    return v


def _orientation(v: Any) -> str | None:
    if v is None or v in APPLY_DIRS.values():
        return v
    if v in APPLY_DIRS:
        return APPLY_DIRS[v]
    raise ApplyError(f"apply_dir {v!r} is not supported: one of {', '.join(APPLY_DIRS)} (Minimum and Maximum "
                     "are not; see docs/opendtect.md)")


def _dtype(p: dict[str, Any], key: str, default: str) -> str:
    v = p.get(key, default)
    if v not in F.DTYPES:
        raise ApplyError(f"{key}: {v!r} is not one of {', '.join(F.DTYPES)}")
    return str(v)
