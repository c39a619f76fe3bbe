"""The executor: a long-lived process that owns one device slot and runs one job at a time.

Started by the daemon's supervisor as `python -m daemon.executor --slot SLOT ...` with CUDA_VISIBLE_DEVICES already
set, so torch (imported only here, never in the daemon) sees exactly its device. With the Ray backend a Ray task
starts it with `--one-job` on some node of the cluster (daemon/server/backends/ray_backend.py): it runs the one job it
is sent after its hello and exits; `--parent-pid` is then the Ray worker's, and over tcp it speaks CURVE.

Threads and their sockets:
  - the main thread runs jobs, one after another, taking them from `self.jobs`;
  - the I/O thread owns the main DEALER socket to the daemon (ZeroMQ sockets are not thread-safe): it receives run /
    cancel / control / exit messages, sends what the job queued in `self.outbox` (a byte on a
    pipe wakes it at once), and sends a heartbeat every
    `executor.heartbeat_s`. It needs the GIL for that: a job in C code that releases the GIL still heartbeats,
    one in a long call that keeps it (np.unique over millions of rows) does not. So the daemon does not take
    silence for death: it looks at this process's state and CPU time in /proc (daemon/server/vitals.py) and
    kills it only when it is stopped or used no CPU while silent.

NOTE on dying with the daemon: the executor asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and
the I/O thread also checks os.getppid() every heartbeat; either way no executor outlives its daemon holding GPU
memory. A job's own worker processes watch the executor the same way.

Messages: daemon/common/execproto.py defines every one (RunJob, CancelJob, Control, Stream*, Exit in; Hello,
Heartbeat, JobProgress/JobLog/JobMetrics, Done, Reply out) and encodes them; a frame it refuses (another protocol
version, say) is logged and dropped. A StreamApply and its Reply carry binary array frames after the JSON frame,
exactly as on the public socket: the daemon relays them without copying into JSON.

Streaming sessions (a host application applying a model to blocks it holds in memory) are served by a third thread
with sockets of its own (daemon/executor/streaming.py); the I/O thread says Hello only once the daemon welcomed the
stream thread's socket. An executor started for one job (Ray) serves no streams and has no stream thread.
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import zmq

from client.protocol import ErrorCode
from daemon import kinds as job_registry
from daemon.common import execproto as E
from daemon.common import malloc
from daemon.common.devices import cpu_threads
from daemon.common.lifeline import die_with_parent, ignore_sigint
from daemon.executor.context import EventLogHandler, JobCancelled, JobContext
from daemon.executor.raytasks import executor_node
from daemon.executor.streaming import StreamServer
from daemon.common.settings import Settings, load_settings

log = logging.getLogger("seisd.executor")


class Executor:
    def __init__(self, slot: str, endpoint: str, home: Path, settings: Settings, parent_pid: int,
                 one_job: bool = False):
        self.slot = slot
        self.home = home
        self.settings = settings
        self.parent_pid = parent_pid
        self.one_job = one_job  # started for one job (Ray backend): exit once it is done
        self.endpoint = endpoint
        self.ctx_zmq = zmq.Context()
        self.sock = self._connect(slot)
        self.jobs: queue.Queue[E.RunJob | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[bytes, list[Any]]] = queue.Queue()
        # a byte in this pipe wakes the I/O thread's poll when the outbox gets a message (or it is to stop): a stream
        # reply goes out at once, not at the poll's next time-out (it was up to 20 ms later, most of a streamed
        # block's trip), and the thread sleeps until the next heartbeat otherwise (no wake-ups, no GIL taken from
        # a stream block being computed)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.streams = None if one_job else StreamServer(slot, home, settings, endpoint, self._connect)
        self.current: JobContext | None = None
        self.stop = threading.Event()
        self.io_thread = threading.Thread(target=self._io_loop, name="executor-io", daemon=True)

    def _connect(self, identity: str) -> zmq.Socket:
        """A DEALER to the daemon's executor socket with this identity (over tcp: CURVE with the shared keys)."""
        sock = self.ctx_zmq.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.setsockopt(zmq.LINGER, 2000)
        if self.endpoint.startswith("tcp://"):  # an executor on another node: CURVE with the keys in the shared home
            from daemon.common.keys import executor_keys

            executor_keys(self.home).apply_client(sock)
        sock.connect(self.endpoint)
        return sock

    # -- I/O thread --------------------------------------------------------------------------------------------

    def send(self, msg: E.Message, arrays: list[Any] | None = None) -> None:
        """Thread-safe: queue a message (and array frames) for the I/O thread. Encoded here, so a value that
        cannot be sent raises in the caller's thread, not in the I/O thread."""
        self.outbox.put((E.encode(msg), arrays or []))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the I/O thread is woken already

    def _io_loop(self) -> None:
        if self.streams is not None:
            self.streams.ready.wait()  # never: the daemon kills an executor that does not say hello in time
        self.sock.send(E.encode(E.Hello(slot=self.slot, pid=os.getpid(), threads=cpu_threads())))
        next_beat = 0.0
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        while not self.stop.is_set():
            ready = dict(poller.poll(max(0, int(1000 * (next_beat - time.monotonic())) + 1)))
            if ready.get(self.wake_r):
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
            if ready.get(self.sock):
                frames = self.sock.recv_multipart(copy=False)
                try:
                    msg = E.decode(frames[0].buffer, E.TO_EXECUTOR)
                except E.ExecProtocolError as exc:
                    log.error("message from the daemon dropped: %s", exc)
                else:
                    self._handle(msg, [f.buffer for f in frames[1:]])
            while True:
                try:
                    frame, arrays = self.outbox.get_nowait()
                except queue.Empty:
                    break
                self.sock.send_multipart([frame, *arrays], copy=False)
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.settings.executor.heartbeat_s
                if os.getppid() != self.parent_pid:
                    os._exit(3)  # the daemon is gone: never outlive it
                job = self.current.job_id if self.current else None
                self.sock.send(E.encode(E.Heartbeat(pid=os.getpid(), job=job)))

    def _handle(self, msg: E.Message, frames: list[Any]) -> None:
        ctx = self.current
        if isinstance(msg, E.RunJob):
            self.jobs.put(msg)
        elif isinstance(msg, E.CancelJob) and ctx is not None and ctx.job_id == msg.job:
            ctx.cancel(E.FailureCause.CANCELLED, msg.reason or "cancelled")
        elif isinstance(msg, E.Control):
            self._control(ctx, msg)
        elif isinstance(msg, E.Exit):
            if ctx is not None:
                ctx.cancel(E.FailureCause.DAEMON_STOPPING, "daemon stopping")
            self.jobs.put(None)

    def _control(self, ctx: JobContext | None, msg: E.Control) -> None:
        if ctx is None or ctx.job_id != msg.job:
            reply = E.Reply.failure(msg.token, ErrorCode.CONFLICT, f"job {msg.job} is not running on {self.slot}")
        else:
            try:
                reply = E.Reply(token=msg.token, ok=True, result=ctx.handle_control(msg.name, msg.args))
            except KeyError as exc:
                reply = E.Reply.failure(msg.token, ErrorCode.CONFLICT, str(exc.args[0]))
            except Exception as exc:  # reported to the requester, the job goes on
                reply = E.Reply.failure(msg.token, ErrorCode.BAD_ARGS, f"{type(exc).__name__}: {exc}")
        self.send(reply)

    # -- main thread -------------------------------------------------------------------------------------------

    def serve(self) -> None:
        if self.streams is not None:
            self.streams.thread.start()
        self.io_thread.start()
        while True:
            msg = self.jobs.get()
            if msg is None:
                break
            self._run(msg)
            if self.one_job:
                break
        # let the I/O thread flush what the last job queued
        deadline = time.monotonic() + 2
        while not self.outbox.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stop.set()
        self._wake()
        self.io_thread.join(timeout=2)

    def _run(self, msg: E.RunJob) -> None:
        job_dir = Path(msg.job_dir)
        ctx = JobContext(job_id=msg.job, kind=msg.kind, job_dir=job_dir, home=self.home, device=msg.device,
                         attempt=msg.attempt, resume=msg.resume, daemon_pid=self.parent_pid, settings=self.settings,
                         send=self.send)
        handler = logging.FileHandler(job_dir / "log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        ctx.log.addHandler(handler)
        ctx.log.addHandler(EventLogHandler(ctx))
        self.current = ctx
        done = E.Done(msg.job, E.Outcome.SUCCEEDED)
        try:
            kind = job_registry.get_kind(msg.kind)
            if kind is None:
                raise RuntimeError(f"job kind {msg.kind!r} is not registered in this executor")
            spec = kind.spec.model_validate(msg.spec)
            ctx.log.info("job %d (%s) starting on %s%s, attempt %d%s", msg.job, kind.name, self.slot,
                         f" ({executor_node()})" if executor_node() else "", ctx.attempt,
                         ", resuming" if ctx.resume else "")
            result = kind.load_runner()(spec, ctx) or {}
            if not isinstance(result, dict):
                raise TypeError(f"the {kind.name} runner returned {type(result).__name__}, not a dict")
            done = E.Done(msg.job, E.Outcome.SUCCEEDED, result=result)
            E.encode(done)  # a result that cannot be sent fails the job here, naming why
        except JobCancelled as exc:
            done = E.Done(msg.job, E.Outcome.CANCELLED, ctx.cancel_cause, str(exc))
        except Exception as exc:
            if ctx.cancelled.is_set():  # whatever a library raises once cancel was asked, the job was cancelled
                done = E.Done(msg.job, E.Outcome.CANCELLED, ctx.cancel_cause, ctx.cancel_reason or "cancelled")
                ctx.log.info("stopped by cancel (%s: %s)", type(exc).__name__, exc)
            else:
                done = E.Done(msg.job, E.Outcome.FAILED, E.FailureCause.JOB_ERROR, f"{type(exc).__name__}: {exc}")
                ctx.log.error("job failed: %s\n%s", done.error, traceback.format_exc())
        finally:
            ctx.flush_progress()  # the last progress, also of a job that failed or was cancelled half-way
            ctx.log.info("job %d finished: %s%s", msg.job, done.outcome.value, f" ({done.error})" if done.error
                         else "")
            for h in list(ctx.log.handlers):
                ctx.log.removeHandler(h)
                h.close()
            self.current = None
            malloc.release()
        self.send(done)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m daemon.executor")
    ap.add_argument("--slot", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--parent-pid", type=int, required=True)
    ap.add_argument("--one-job", action="store_true", help="exit after one job (executors started by Ray)")
    a = ap.parse_args(argv)
    die_with_parent(a.parent_pid)  # exits at once when the parent is already gone
    ignore_sigint()
    malloc.tune()
    settings = load_settings(a.home, a.config)
    job_registry.load_plugins(settings.plugins)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s executor[{a.slot}] %(levelname)s %(message)s")
    Executor(a.slot, a.endpoint, a.home, settings, a.parent_pid, a.one_job).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
