"""Fault injection of train and predict jobs: seeded SIGKILLs of the daemon, an executor, a data worker or a viewer.

A `KillPlan` (from a seed) says, kill by kill, which process kind dies and at what point of which job (a fraction
of the job's progress). `FaultRun` runs the plan on a real seisd (tests/harness.py RunningDaemon): each round
submits a tiny train job and a tiny predict job, kills at the planned moment, then does what a user would do:

  daemon     restart the daemon; the requeued jobs resume (train from checkpoints/last.pt, predict from the chunks
             recorded in progress.json); they must succeed;
  executor   nothing: the daemon restarts the executor and the job resumes on it (train from
             checkpoints/last.pt, predict from the chunks recorded in progress.json); it must succeed;
  worker     nothing: the pool replaces the worker and the job succeeds;
  viewer     the viewer is reported crashed; the user starts it again and it serves.

After each round: every accepted job is in its right final state, the outputs equal those of an undisturbed run
(predict: bit for bit; train: the weights within WEIGHT_ATOL, see `compare_weights`), no /dev/shm segment of these
daemons is left, and no process the daemons started is alive beyond the current daemon's own executor (and the
viewer the user restarted). At the end the daemon is stopped and nothing it started may live.
"""
from __future__ import annotations

import random
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import psutil

from tests.harness import RunningDaemon, command_line, wait_for, wait_state
from workers.shm import SHM_DIR, owner_pid_of

KINDS = ("daemon", "executor", "worker", "viewer")
VIEWER = "examples"          # the bokeh example-set viewer: quicker to start than TensorBoard
WEIGHT_ATOL = 1e-6           # train: resumed weights may differ from the undisturbed run's by at most this


class FaultFinding(AssertionError):
    """A check after a kill failed: a job lost or wrong, a segment leaked, a process left behind."""


# -- the plan --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """One planned SIGKILL: `target` in KINDS, during job `job` ("train" or "predict") at progress `at`."""

    target: str
    job: str
    at: float

    def describe(self) -> str:
        return f"kill {self.target} during {self.job} at {self.at:.2f}"


def plan_kills(seed: int, count: int) -> list[tuple[Kill, Kill | None]]:
    """`count` kills spread evenly over the four kinds, in rounds of (a kill in the train job, a kill in the
    predict job); the seed picks the order and each moment (a fraction of the job's progress, 0.1 to 0.75).

    Data workers exist only in train jobs (predict applies the model in the executor), so worker kills go to
    train slots; daemon and executor kills alternate between the two jobs (each resumes differently in train and
    predict), and viewer kills fill the slots left."""
    rng = random.Random(seed)
    n_train = (count + 1) // 2
    per_kind = {k: count // len(KINDS) + (i < count % len(KINDS)) for i, k in enumerate(KINDS)}
    train, predict = ["worker"] * per_kind["worker"], []
    for i in range(max(per_kind["daemon"], per_kind["executor"])):
        for kind in ("daemon", "executor"):
            if i < per_kind[kind]:
                (train if i % 2 == 0 and len(train) < n_train else predict).append(kind)
    for _ in range(per_kind["viewer"]):
        (train if len(train) < n_train else predict).append("viewer")
    rng.shuffle(train)
    rng.shuffle(predict)
    moment = lambda: round(rng.uniform(0.1, 0.75), 3)  # noqa: E731
    return [(Kill(t, "train", moment()), Kill(predict[i], "predict", moment()) if i < len(predict) else None)
            for i, t in enumerate(train)]


# -- processes and segments ------------------------------------------------------------------------------------


class DescendantWatch:
    """Records every process descended from the daemon(s) of a RunningDaemon, sampling in a thread.

    The harness remembers descendants only when asked; fault injection needs them all, including data workers
    that live a few seconds, so that 'no process left running' covers every process the daemons ever started."""

    def __init__(self, d: RunningDaemon, interval: float = 0.1):
        self.d, self.interval = d, interval
        self.seen: dict[int, psutil.Process] = {}
        self.daemon_pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="descendant-watch", daemon=True)

    def __enter__(self) -> "DescendantWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> list[psutil.Process]:
        """The live descendants of the current daemon (also recorded, and handed to the harness's cleanup)."""
        proc = self.d.proc
        if proc is None or proc.poll() is not None:
            return []
        try:
            root = psutil.Process(proc.pid)
            kids = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.daemon_pids.add(proc.pid)
        for k in kids:
            if k.pid not in self.seen:
                self.seen[k.pid] = k
                self.d.family.seen.setdefault(k.pid, k)  # the harness kills leftovers when a test fails
        return kids

    @property
    def owner_pids(self) -> set[int]:
        """Every pid a segment of these daemons may be named after (the daemons', or their children's)."""
        return self.daemon_pids | set(self.seen)

    def alive(self, exclude: set[int] = frozenset()) -> list[str]:
        """Recorded processes still alive (psutil tells pid reuse apart), as 'pid cmdline' strings."""
        out = []
        for pid, p in self.seen.items():
            if pid in exclude:
                continue
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        return out


def data_workers(executor_pid: int) -> list[psutil.Process]:
    """The executor's live data-worker processes (multiprocessing spawn children; not its resource tracker)."""
    try:
        kids = psutil.Process(executor_pid).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if "spawn_main" in (cmd := command_line(k)) and "resource_tracker" not in cmd]


def segments_of(owner_pids: set[int]) -> list[str]:
    """/dev/shm segments whose names carry one of these owner pids (workers/shm.py naming rule)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if owner_pid_of(p.name) in owner_pids)


# -- outputs ---------------------------------------------------------------------------------------------------


def model_weights(path: Path) -> dict[str, np.ndarray]:
    """The weight datasets of a model file (daemon/executor/modelfile.py keeps them under /weights)."""
    with h5py.File(path, "r") as h5:
        return {k: h5["weights"][k][()] for k in h5["weights"]}


def compare_weights(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> tuple[bool, float]:
    """(bit-identical, largest absolute difference) of two models' weights."""
    assert set(got) == set(want), (sorted(got), sorted(want))
    exact = all(np.array_equal(got[k], want[k]) for k in want)
    worst = max(float(np.max(np.abs(got[k].astype(np.float64) - want[k]))) if got[k].size else 0.0 for k in want)
    return exact, worst


def prediction_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in ("labels", "probabilities")}


# -- the figures -----------------------------------------------------------------------------------------------


@dataclass
class FaultFigures:
    """What the run counted; `as_json()` is the fault part of tools/bench_reliability.py's line."""

    kills: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    kills_survived: int = 0
    jobs_accepted: int = 0
    jobs_lost: int = 0
    wrong_outputs: int = 0
    shm_leaked: int = 0
    orphan_processes: int = 0
    resumes_exact: int = 0
    resumes_inexact: int = 0
    max_weight_diff: float = 0.0
    findings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"kills": sum(self.kills.values()), "kills_by_kind": dict(self.kills),
                "kills_survived": self.kills_survived, "jobs_accepted": self.jobs_accepted,
                "jobs_lost": self.jobs_lost, "wrong_outputs": self.wrong_outputs, "shm_leaked": self.shm_leaked,
                "orphan_processes": self.orphan_processes, "train_resumes_bit_exact": self.resumes_exact,
                "train_resumes_inexact": self.resumes_inexact, "max_weight_diff": self.max_weight_diff,
                "findings": self.findings[:10]}


# -- the home and the jobs -------------------------------------------------------------------------------------

SHAPE = (32, 32, 32)   # inlines, crosslines, samples (tools/synth.py makes no less): jobs of seconds
N_CLASSES = 6   # tools/synth.py makes at least 6

# Predict applies a model that sleeps in each forward pass, so a job lasts long enough to be killed half-way.
from tests.daemon.predict_data import SLOW_MODEL  # noqa: E402  (the one slow user model of the tests)


def stock_home(home: Path, work: Path, delay_s: float = 0.05) -> None:
    """Survey `fi` (synthetic, SHAPE) with pick set `default` on its middle inline, and model file `slow`."""
    import sys

    import torch

    from daemon.executor.modelfile import ModelInfo, save_model_file
    from daemon.executor.models import build_model
    from tests.harness import ROOT
    from workers.picks import from_labelled_slice
    from workers.segy_import import import_segy

    sys.path.insert(0, str(ROOT / "tools"))
    import synth

    s = synth.generate(SHAPE, seed=0, n_classes=N_CLASSES)
    synth.write(s, work / "synth")
    survey = import_segy(work / "synth" / "seismic.sgy", home / "surveys" / "fi", name="fi")
    middle = SHAPE[0] // 2
    from_labelled_slice(survey, int(survey.inlines[middle]), s.labels[middle].astype(np.int64),
                        list(s.class_names)).save(survey.folder, "default")
    user = work / "slow_model.py"
    user.write_text(SLOW_MODEL)
    torch.manual_seed(0)
    params = {"path": str(user), "delay_s": delay_s}
    stats = survey.stats("seismic")
    info = ModelInfo(name="user", params=params, in_channels=1, n_classes=N_CLASSES, input_shape=[SHAPE[1], SHAPE[2]],
                     classes=list(s.class_names), normalisation={"volumes": [{"mean": stats["mean"],
                                                                              "std": stats["std"]}]},
                     input_spec={"apply_kind": "fcn", "crop": [SHAPE[1], SHAPE[2]], "orientation": "inline",
                                 "volumes": ["seismic"], "picks": "default", "context": 0})
    model = build_model("user", 1, N_CLASSES, [SHAPE[1], SHAPE[2]], params)
    save_model_file(home / "models" / "slow.h5", model, info)


class _JobEnded(Exception):
    """The job to kill something in ended before the kill could land."""


def train_job(output: str, **train: Any) -> dict[str, Any]:
    """A tiny patchcnn run: 2 epochs of 12 batches of 32 crops, a checkpoint every 4 steps, two data workers."""
    return {"kind": "train", "output": output,
            "data": {"survey": "fi", "crop": {"size": [15, 15]}, "batch_size": 32, "batches_per_epoch": 12,
                     "val_batches": 2, "split": {"block": 4}, "workers": 2},
            "model": {"name": "patchcnn", "params": {"filters": [8, 8, 8]}},
            "train": {"epochs": 2, "seed": 0, "checkpoint_every_steps": 4, "progress_interval_s": 0.05,
                      "early_stop": {"enabled": False}, **train}}


def predict_job(output: str, **extra: Any) -> dict[str, Any]:
    """The slow model over the whole survey, one inline per resumable chunk, HDF5 only, no figures."""
    return {"kind": "predict", "model": "slow", "survey": "fi", "output": output, "outputs": ["labels",
            "probabilities"], "format": "hdf5", "chunk_inlines": 1, "batch_size": 1,
            "figures": {"enabled": False}, **extra}


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """The jobs one planned kill concerns: the killed job and, when the user had to resubmit it, the new job."""

    kill: Kill | None
    output: str
    jobs: list[tuple[int, str]] = field(default_factory=list)   # (job id, the state it must end in)


class FaultRun:
    """Runs rounds of (train job, predict job) with planned kills on one RunningDaemon; see the module docstring.

    `reference()` first runs both jobs undisturbed; `round(i, train_kill, predict_kill)` runs one round and checks
    it; `finish()` stops the daemon and checks that nothing it started lives on."""

    def __init__(self, d: RunningDaemon, watch: DescendantWatch, seed: int, log: Callable[[str], None] = print):
        self.d, self.watch, self.log = d, watch, log
        self.rng = random.Random(seed)
        self.figures = FaultFigures()
        self.ref_weights: dict[str, np.ndarray] = {}
        self.ref_pred: dict[str, np.ndarray] = {}
        self.leaked: set[str] = set()
        self.orphans: set[int] = set()

    # -- set-up ------------------------------------------------------------------------------------------------

    def reference(self) -> None:
        """The undisturbed outputs, and the viewer the kills will find running."""
        c = self.d.client
        for job in (train_job("ref"), predict_job("ref")):
            rec = wait_state(c, c.submit(job)["id"], timeout=120)
            assert rec["state"] == "succeeded", (rec, c.logs(rec["id"]))
        self.ref_weights = model_weights(self.d.home / "models" / "ref.h5")
        self.ref_pred = prediction_arrays(self.d.home / "predictions" / "ref" / "prediction.h5")
        self.start_viewer()

    def start_viewer(self) -> dict[str, Any]:
        """What a user does when the viewer is gone: start it, and see that it serves."""
        c = self.d.client
        c.call("viewer.start", name=VIEWER)

        def running() -> dict[str, Any] | None:
            v = c.call("viewer.status", name=VIEWER)
            return v if v["state"] == "running" else None
        v = wait_for(running, 60, 0.1, f"viewer {VIEWER} to run")
        with urllib.request.urlopen(v["url"], timeout=10) as r:
            if r.status != 200:
                raise FaultFinding(f"viewer {VIEWER} answered {r.status} at {v['url']}")
        return v

    # -- a round -----------------------------------------------------------------------------------------------

    def round(self, i: int, train_kill: Kill, predict_kill: Kill | None) -> None:
        c = self.d.client
        chains = {"train": Chain(train_kill, f"t{i}"), "predict": Chain(predict_kill, f"p{i}")}
        # the predict job is submitted once the train job's kill and the user's answer to it are done, so a
        # user's wait (or the daemon's restart) never lets it run to its end before its own planned moment
        for name, chain in chains.items():
            job = train_job(chain.output) if name == "train" else predict_job(chain.output)
            chain.jobs.append((c.submit(job)["id"], "succeeded"))
            if chain.kill is not None:
                self._kill_in(chain)
        for name, chain in chains.items():
            self._check_chain(name, chain)
        self._check_leftovers(f"round {i}")

    def _kill_in(self, chain: Chain, tries: int = 3) -> None:
        kill = chain.kill
        assert kill is not None
        for attempt in range(tries):
            job_id = chain.jobs[-1][0]
            if self._wait_moment(job_id, kill.at):
                try:
                    getattr(self, f"_kill_{kill.target}")(chain)
                except _JobEnded:
                    pass  # it ended between its moment and the kill: as if the moment had passed unseen
                else:
                    self.log(f"{kill.describe()} (job {job_id})")
                    self.figures.kills[kill.target] += 1
                    return
            # progress events are coalesced, so a short job can pass its moment unseen: run it again (the user's
            # rerun with overwrite gives the same output) and aim at it once more
            self.log(f"{kill.describe()}: job {job_id} ended before the moment; running it again")
            again = (dict(train_job(chain.output), overwrite=True) if kill.job == "train"
                     else predict_job(chain.output, overwrite=True))
            chain.jobs.append((self.d.client.submit(again)["id"], "succeeded"))
        self.figures.findings.append(f"missed: {kill.describe()}: the job passed its moment {tries} times "
                                     "unseen; no kill")
        chain.kill = None

    def _wait_moment(self, job_id: int, at: float) -> bool:
        """Poll until the job runs at progress >= at; False when it ended first."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rec = self.d.client.show(job_id)
            if rec["state"] == "running" and (rec["progress"] or 0.0) >= at:
                return True
            if rec["state"] in ("succeeded", "failed", "cancelled"):
                return False
            time.sleep(0.02)
        raise FaultFinding(f"job {job_id} did not reach progress {at} within 120 s")

    def _kill_daemon(self, chain: Chain) -> None:
        self.watch.sample()
        before = segments_of(self.watch.owner_pids)
        self.d.kill9()
        # its children watch the daemon and exit (PDEATHSIG); those still alive later are counted as orphans
        deadline = time.monotonic() + 10
        while self.watch.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.d.restart()
        self._segments_gone(before, chain.kill)
        self.start_viewer()

    def _executor_pid(self, job_id: int) -> int:
        devices = self.d.client.devices()
        pid = next((x["executor_pid"] for x in devices if x.get("job") == job_id or x.get("job_id") == job_id),
                   None) or devices[0]["executor_pid"]
        self.watch.sample()
        return int(pid)

    def _kill_executor(self, chain: Chain) -> None:
        job_id = chain.jobs[-1][0]
        pid = self._executor_pid(job_id)
        before = segments_of(self.watch.owner_pids)
        psutil.Process(pid).kill()
        rec = wait_state(self.d.client, job_id, timeout=120)
        self._segments_gone(before, chain.kill)
        if not any(h["state"] == "interrupted" for h in rec["history"]) and rec["state"] == "succeeded":
            raise _JobEnded(job_id)  # progress is reported at intervals: the job may end before the kill lands
        # otherwise it resumed on the restarted executor; _check_chain wants it succeeded with the right output

    def _segments_gone(self, before: list[str], kill: Kill, within: float = 5.0) -> None:
        """The segments of the jobs a kill ended must go (by the daemon's start-up sweep, or when the daemon sees
        the executor die) while the daemon runs on: a leaked ring is memory nobody frees until the next restart."""
        deadline = time.monotonic() + within
        while (left := set(before) & set(segments_of(self.watch.owner_pids))) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left - self.leaked:
            self.leaked |= left
            self.figures.shm_leaked = len(self.leaked)
            self.figures.findings.append(f"{kill.describe()}: the killed job's segments stay in /dev/shm after the "
                                         f"job ended and the daemon went on: {sorted(left)}")

    def _kill_worker(self, chain: Chain) -> None:
        job_id = chain.jobs[-1][0]
        pid = self._executor_pid(job_id)

        def workers_or_end() -> Any:
            found = data_workers(pid)
            if found:
                return found
            if self.d.client.show(job_id)["state"] != "running":
                raise _JobEnded(job_id)
            return None

        workers = wait_for(workers_or_end, 10, 0.02, "a data worker")
        self.watch.sample()
        self.rng.choice(workers).kill()

    def _kill_viewer(self, chain: Chain) -> None:
        c = self.d.client
        v = c.call("viewer.status", name=VIEWER)
        psutil.Process(v["pid"]).kill()
        crashed = wait_for(lambda: (lambda s: s if s["state"] == "crashed" else None)(
            c.call("viewer.status", name=VIEWER)), 15, 0.05, f"viewer {VIEWER} to be reported crashed")
        if "SIGKILL" not in (crashed["reason"] or ""):
            self.figures.findings.append(f"viewer crash reason does not name SIGKILL: {crashed['reason']}")
        self.start_viewer()

    # -- checks ------------------------------------------------------------------------------------------------

    def _check_chain(self, name: str, chain: Chain) -> None:
        """Every job of the chain ends in its right state; the last one's output equals the undisturbed run's."""
        c, right = self.d.client, True
        for job_id, want in chain.jobs:
            self.figures.jobs_accepted += 1
            rec = wait_state(c, job_id, timeout=180)
            ok = rec["state"] == want and (want != "failed" or "executor" in (rec["error"] or ""))
            if not ok:
                self.figures.jobs_lost += 1
                right = False
                self.figures.findings.append(
                    f"{name} job {job_id} ({chain.kill.describe() if chain.kill else 'no kill'}"
                    f"): {rec['state']} (want {want}): {rec.get('error') or rec.get('reason')}"[:300])
        if right and not self._output_right(name, chain):
            self.figures.wrong_outputs += 1
            right = False
        if chain.kill is not None and right:
            self.figures.kills_survived += 1

    def _output_right(self, name: str, chain: Chain) -> bool:
        home = self.d.home
        if name == "predict":
            got = prediction_arrays(home / "predictions" / chain.output / "prediction.h5")
            same = all(np.array_equal(got[k], self.ref_pred[k]) for k in self.ref_pred)
            if not same:
                self.figures.findings.append(f"predict {chain.output}: outputs differ from the undisturbed run")
            return same
        exact, worst = compare_weights(model_weights(home / "models" / f"{chain.output}.h5"), self.ref_weights)
        if chain.kill is not None and chain.kill.target in ("daemon", "executor"):
            self.figures.resumes_exact += exact
            self.figures.resumes_inexact += not exact
        self.figures.max_weight_diff = max(self.figures.max_weight_diff, worst)
        if worst > WEIGHT_ATOL:
            self.figures.findings.append(f"train {chain.output} ({chain.kill.describe() if chain.kill else ''}): "
                                         f"weights differ by {worst:.3g} from the undisturbed run")
        return worst <= WEIGHT_ATOL

    def _allowed(self) -> set[int]:
        """Processes the current daemon may run between jobs: its executors (and their multiprocessing resource
        trackers) and the viewer."""
        allowed = set()
        for p in self.watch.sample():
            cmd = command_line(p)  # "" once it ended: not allowed, and not running either
            if "daemon.executor" in cmd or "resource_tracker" in cmd or "daemon.viewers" in cmd:
                allowed.add(p.pid)
        return allowed

    def _check_leftovers(self, when: str) -> None:
        """No segment of these daemons in /dev/shm, no process they started beyond the allowed ones."""
        leaked = set(segments_of(self.watch.owner_pids)) - self.leaked
        if leaked:
            self.leaked |= leaked
            self.figures.findings.append(f"{when}: segments left in /dev/shm: {sorted(leaked)}")
        time.sleep(0.2)
        stray = [s for s in self.watch.alive(exclude=self._allowed()) if int(s.split()[0]) not in self.orphans]
        if stray:
            self.orphans |= {int(s.split()[0]) for s in stray}
            self.figures.findings.append(f"{when}: processes left running: {stray}")
        self.figures.shm_leaked, self.figures.orphan_processes = len(self.leaked), len(self.orphans)

    def finish(self) -> FaultFigures:
        """Stop the daemon the way a user does; nothing it ever started may live on, no segment may stay."""
        self.watch.sample()
        self.d.stop()
        deadline = time.monotonic() + 10
        while self.watch.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._check_leftovers("after the daemon stopped")
        return self.figures
