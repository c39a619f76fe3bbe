"""JobStore: the SQLite (WAL) record of every job, its state history, its events and the submit keys seen.

Only the daemon's main process writes here, from its single event loop, so there is one connection and no locking
beyond SQLite's own. Every state change is committed before the daemon acknowledges it to anyone: a reply or an event
never announces something a crash could take back.

NOTE on submit keys (exactly-once submits, docs/PROTOCOL.md "Retries"): a job submitted with an idempotency key is
written with its key in one transaction, so after any crash either both exist or neither does; a retry with that
key then finds the job, whatever happened to the first reply. A key is kept as long as its job (jobs are never
removed), with a fingerprint of the job file it came with, so a key reused for another job file is told apart.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from client.protocol import JOB_STATES, TERMINAL_STATES
from daemon.common.execproto import FailureCause

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    name        TEXT,
    state       TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    device      TEXT NOT NULL DEFAULT 'auto',
    spec        TEXT NOT NULL,
    progress    REAL NOT NULL DEFAULT 0,
    message     TEXT,
    error       TEXT,
    result      TEXT,
    slot        TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, priority DESC, id);
CREATE TABLE IF NOT EXISTS job_history (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    time    REAL NOT NULL,
    state   TEXT NOT NULL,
    reason  TEXT,
    cause   TEXT              -- execproto.FailureCause of the change, where one is known
);
CREATE INDEX IF NOT EXISTS job_history_job ON job_history(job_id);
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  INTEGER,
    time    REAL NOT NULL,
    type    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS submit_keys (
    key          TEXT PRIMARY KEY,
    job_id       INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    fingerprint  TEXT NOT NULL,   -- sha256 of the submitted job file and priority (canonical JSON)
    created      REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SubmitKey:
    """A submit's idempotency key and the fingerprint of what was submitted with it."""

    key: str
    fingerprint: str


class StoreError(RuntimeError):
    """The job store cannot be opened or written (a full disk, a corrupt file): the message names the file."""


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    name: str | None
    state: str
    priority: int
    device: str
    spec: dict[str, Any]
    progress: float
    message: str | None
    error: str | None
    result: dict[str, Any] | None
    slot: str | None
    attempts: int
    created: float
    started: float | None
    finished: float | None

    def summary(self) -> dict[str, Any]:
        """What `jobs` lists and `show` starts with."""
        return {"id": self.id, "kind": self.kind, "name": self.name, "state": self.state,
                "priority": self.priority, "device": self.device, "slot": self.slot, "progress": self.progress,
                "message": self.message, "error": self.error, "attempts": self.attempts, "created": self.created,
                "started": self.started, "finished": self.finished}


class JobStore:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            if "cause" not in {row[1] for row in self.db.execute("PRAGMA table_info(job_history)")}:
                self.db.execute("ALTER TABLE job_history ADD COLUMN cause TEXT")  # a store from before causes
            if "topic" not in {row[1] for row in self.db.execute("PRAGMA table_info(events)")}:
                self.db.execute("ALTER TABLE events ADD COLUMN topic TEXT")  # a store from before topics
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the job store {path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    # -- writes ------------------------------------------------------------------------------------------------

    def _write(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `work` in one immediate transaction; a failure (a full disk) rolls back and names the store."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            out = work(self.db)
            self.db.execute("COMMIT")
            return out
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise StoreError(f"job store {self.path}: {exc}") from None

    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> list[sqlite3.Cursor]:
        return self._write(lambda db: [db.execute(sql, args) for sql, args in statements])

    def add_job(self, kind: str, spec: dict[str, Any], priority: int, device: str, name: str | None,
                key: SubmitKey | None = None) -> int:
        """A new queued job (and its submit key, in the same transaction); its id."""
        now = time.time()

        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO jobs(kind, name, state, priority, device, spec, created) VALUES (?,?,?,?,?,?,?)",
                (kind, name, "queued", priority, device, json.dumps(spec), now))
            job_id = int(cur.lastrowid)
            db.execute("INSERT INTO job_history(job_id, time, state, reason) VALUES (?,?,?,?)",
                       (job_id, now, "queued", "submitted"))
            if key is not None:
                db.execute("INSERT INTO submit_keys(key, job_id, fingerprint, created) VALUES (?,?,?,?)",
                           (key.key, job_id, key.fingerprint, now))
            return job_id

        return self._write(work)

    def set_state(self, job_id: int, state: str, reason: str | None = None, *, cause: FailureCause | None = None,
                  error: str | None = None, slot: str | None = None, result: dict[str, Any] | None = None) -> None:
        """Move a job to `state`, recording the transition (with its cause) in its history in the same
        transaction."""
        assert state in JOB_STATES, state
        now = time.time()
        sets = ["state=?"]
        args: list[Any] = [state]
        if state == "running":
            sets += ["started=?", "slot=?", "attempts=attempts+1", "error=NULL"]
            args += [now, slot]
        if state == "queued":
            sets += ["slot=NULL"]
        if state in TERMINAL_STATES:
            sets += ["finished=?", "error=?"]
            args += [now, error]
        if result is not None:
            sets.append("result=?")
            args.append(json.dumps(result))
        args.append(job_id)
        self._tx([(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", tuple(args)),
                  ("INSERT INTO job_history(job_id, time, state, reason, cause) VALUES (?,?,?,?,?)",
                   (job_id, now, state, reason or error, cause.value if cause else None))])

    def set_progress(self, job_id: int, fraction: float, message: str | None) -> None:
        self._tx([("UPDATE jobs SET progress=?, message=COALESCE(?, message) WHERE id=?",
                   (fraction, message, job_id))])

    def add_event(self, job_id: int | None, type_: str, data: dict[str, Any], when: float,
                  topic: str | None = None) -> int:
        """Record an event (under a job, or none); its seq."""
        cur = self._tx([("INSERT INTO events(job_id, time, type, data, topic) VALUES (?,?,?,?,?)",
                         (job_id, when, type_, json.dumps(data), topic))])[0]
        return int(cur.lastrowid)

    # -- reads -------------------------------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRow | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _row(row) if row else None

    def list(self, states: list[str] | None = None, kind: str | None = None, limit: int = 100) -> list[JobRow]:
        where, args = [], []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if kind:
            where.append("kind=?")
            args.append(kind)
        sql = f"SELECT {_COLUMNS} FROM jobs {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT ?"
        return [_row(r) for r in self.db.execute(sql, (*args, limit))]

    def queued_in_order(self) -> list[JobRow]:
        """The queue: highest priority first, then first come, first served."""
        return [_row(r) for r in self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state='queued' ORDER BY priority DESC, id ASC")]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(JOB_STATES, 0)
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    def history(self, job_id: int) -> list[dict[str, Any]]:
        """The job's state changes, oldest first, each with its FailureCause value (or None)."""
        return [{"time": t, "state": s, "reason": r, "cause": c} for t, s, r, c in self.db.execute(
            "SELECT time, state, reason, cause FROM job_history WHERE job_id=? ORDER BY rowid", (job_id,))]

    def count_transitions(self, job_id: int, state: str, causes: list[str]) -> int:
        """How many times the job entered `state` for one of `causes` (FailureCause values)."""
        return int(self.db.execute(
            f"SELECT COUNT(*) FROM job_history WHERE job_id=? AND state=? AND cause IN ({','.join('?' * len(causes))})",
            (job_id, state, *causes)).fetchone()[0])

    def last_event(self, job_id: int, type_: str) -> dict[str, Any] | None:
        """The data of a job's latest event of one type (e.g. its latest metrics), or None."""
        row = self.db.execute("SELECT data FROM events WHERE job_id=? AND type=? ORDER BY seq DESC LIMIT 1",
                              (job_id, type_)).fetchone()
        return json.loads(row[0]) if row else None

    def events(self, job_id: int | None, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored events with seq > after, in order: one job's, or (job_id None) every one, whatever its topic."""
        where = "job_id=? AND seq>?" if job_id is not None else "seq>?"
        args = (job_id, after) if job_id is not None else (after,)
        return [{"seq": seq, "time": t, "type": ty, "topic": topic or (f"job.{job}" if job is not None else ""),
                 "data": json.loads(d)} for seq, t, ty, d, topic, job in self.db.execute(
            f"SELECT seq, time, type, data, topic, job_id FROM events WHERE {where} ORDER BY seq LIMIT ?",
            (*args, limit))]

    def job_of_key(self, key: str) -> tuple[int, str] | None:
        """(job id, fingerprint) of the job submitted with this idempotency key; None for a key never seen."""
        row = self.db.execute("SELECT job_id, fingerprint FROM submit_keys WHERE key=?", (key,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None


_COLUMNS = ("id, kind, name, state, priority, device, spec, progress, message, error, result, slot, attempts, "
            "created, started, finished")


def _row(r: tuple[Any, ...]) -> JobRow:
    return JobRow(id=r[0], kind=r[1], name=r[2], state=r[3], priority=r[4], device=r[5], spec=json.loads(r[6]),
                  progress=r[7], message=r[8], error=r[9], result=json.loads(r[10]) if r[10] else None,
                  slot=r[11], attempts=r[12], created=r[13], started=r[14], finished=r[15])
