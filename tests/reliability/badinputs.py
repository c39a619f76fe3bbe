"""Bad inputs a job file may carry, each of which must be refused at submit with a message naming it; shared by
tests/reliability/test_bad_inputs.py and tools/bench_reliability.py (section "bad inputs refused at submit").

A home of its own (`stock`): survey `f3` (the real F3 crop) with pick set `two`, a SEG-Y and picks under
`<base>/files`, and a daemon with tcp (CURVE) on and `paths.inputs` empty (the default). Then:

- names: a user name shaped like one of seisd's own temporary names (`.f3.partial`, ...);
- paths: relative paths that climb out of the home (existing target or not: the same answer, so submit is no
  oracle of which files exist), FIFOs, character devices, folders, a link in the home pointing out of it;
- sizes: data.workers, batches_per_epoch, val_batches and the ring past what the machine has;
- code over tcp: a custom script or notebook, a user model (tcp.allow_code is false by default), and files outside
  the home named by a tcp client while paths.inputs is empty.

`name_collision_losses` imports survey `g` beside a survey named `g.partial` (the importer's temporary name
before the fix) and counts what `g.partial` lost.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.api import Client, SeisdError
from tests.harness import RunningDaemon, free_port, seisctl_json, wait_state


@dataclass
class Case:
    """One bad job file: sent over `via` ('ipc' or 'tcp'); the refusal must name `key` and contain `says`."""

    name: str
    group: str
    job: dict[str, Any]
    key: str
    says: str
    via: str = "ipc"


@dataclass
class Outcome:
    case: Case
    refused: bool
    message: str
    problems: list[str] = field(default_factory=list)

    @property
    def clear(self) -> bool:
        """Refused, with a problem that names the key and says what is wrong."""
        return self.refused and any(p.startswith(self.case.key) and self.case.says in p for p in self.problems)


def tcp_daemon(base: Path, env: dict[str, str] | None = None) -> tuple[RunningDaemon, str]:
    """A daemon (not started) with tcp on, CURVE keys made and one client key authorised; returns it and the
    client's secret key file."""
    home = base / "home"
    seisctl_json(home, "keys", "create", "server", "--dir", str(home / "keys"))
    seisctl_json(home, "keys", "create", "me", "--dir", str(base / "client-keys"))
    seisctl_json(home, "keys", "authorize", str(base / "client-keys" / "me.key"))
    d = RunningDaemon(home, env={"SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{free_port()}", **(env or {})})
    return d, str(base / "client-keys" / "me.key_secret")


def tcp_client(d: RunningDaemon, secret: str) -> Client:
    return Client(home=d.home, endpoint=d.client.status()["endpoints"]["tcp_control"], timeout=20,
                  server_key=str(d.home / "keys" / "server.key"), client_key=secret)


def write_picks(folder: Path) -> list[Path]:
    """Two small pick files (classes sand and shale) inside the F3 crop (inlines 111-133, crosslines 875-892)."""
    files = []
    for k, cls in enumerate(("sand", "shale")):
        rows = [f"{111 + (3 * i + k) % 23}\t{875 + (5 * i) % 18}\t{8 + 4 * ((7 * i + k) % 60)}" for i in range(40)]
        path = folder / f"multi_{cls}_ilxl.pts"
        path.write_text("\n".join(rows) + "\n")
        files.append(path)
    return files


def stock(d: RunningDaemon, files: Path, shared_data: Path) -> None:
    """Survey f3 with pick set `two`, imported from copies under `files`."""
    import shutil

    files.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared_data / "segyio" / "f3.sgy", files / "f3.sgy")
    c = d.client
    for job in ({"kind": "import", "survey": "f3", "segy": {"file": str(files / "f3.sgy")}},
                {"kind": "import", "survey": "f3", "picks": {"files": [str(p) for p in write_picks(files)],
                                                              "set": "two"}}):
        done = wait_state(c, c.submit(job)["id"], timeout=120)
        assert done["state"] == "succeeded", done


def train_job(**data: Any) -> dict[str, Any]:
    """A train job file that is valid for the stocked home, with `data` keys changed."""
    return {"kind": "train", "output": "t-bad", "model": {"name": "patchcnn"},
            "data": {"survey": "f3", "picks": "two", "crop": {"size": [8, 8]}, **data}}


def cases(home: Path, scratch: Path, files: Path) -> list[Case]:
    """Every bad job file, with what its refusal must say. Makes the FIFO, the folder, the links and the scripts
    under `scratch` (outside the home) and `home`."""
    scratch.mkdir(parents=True, exist_ok=True)
    fifo = scratch / "picks.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    folder = scratch / "a-folder.sgy"
    folder.mkdir(exist_ok=True)
    outward = home / "surveys-link.sgy"  # in the home by name, outside once resolved
    if not outward.is_symlink():
        os.symlink(files / "f3.sgy", outward)
    script = scratch / "run.py"
    script.write_text(f"open({str(scratch / 'ran')!r}, 'w').write('ran')\n")
    fifo_py = scratch / "fifo_model.py"
    if not fifo_py.exists():
        os.mkfifo(fifo_py)
    model = scratch / "user_model.py"
    model.write_text(f"open({str(scratch / 'ran')!r}, 'w').write('ran')\n"
                     "def build_model(in_channels, n_classes, **params):\n    import torch\n"
                     "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(n_classes))\n")
    up = "../" * (len(home.parts) + 2)
    imp = {"kind": "import", "survey": "f3"}
    out: list[Case] = []
    for name in (".f3.partial", ".g.partial", ".seismic.f32.partial"):  # seisd's own temporary names
        out.append(Case(f"survey {name}", "names", {"kind": "import", "survey": name,
                                                    "segy": {"file": str(files / "f3.sgy")}}, "survey", "not a valid"))
    out += [Case("volume .seismic.f32.partial", "names", {**imp, "segy": {"file": str(files / "f3.sgy"),
                                                                         "volume": ".v.f32.partial",
                                                                         "add_volume": True}},
                 "segy.volume", "not a valid"),
            Case("example set .ex.h5.partial", "names", {"kind": "extract", "examples": ".ex.h5.partial",
                                                         "sources": [{"survey": "f3", "picks": "two"}],
                                                         "crop": {"size": [8, 8]}}, "examples", "not a valid"),
            Case("pick set .two.tmp", "names", {**imp, "picks": {"files": [str(files / "multi_sand_ilxl.pts")],
                                                                  "set": ".two.tmp"}}, "picks.set", "not a valid"),
            Case("model .m.h5.tmp", "names", {**train_job(), "output": ".m.h5.tmp"}, "output", "not a valid")]
    for target in ("etc/hostname", "etc/no-such-file-here"):
        rel = up + target
        out += [Case(f"init_from {rel}", "paths", {**train_job(), "train": {"mode": "transfer", "init_from": rel}},
                     "train.init_from", "outside the home"),
                Case(f"segy.file {rel}", "paths", {"kind": "import", "survey": "rel",
                                                   "segy": {"file": rel}}, "segy.file", "outside the home"),
                Case(f"picks {rel}", "paths", {**imp, "picks": {"files": [rel]}}, "picks.files.0",
                     "outside the home")]
    out += [Case("init_from models/../../x", "paths", {**train_job(), "train": {"mode": "transfer",
                                                                               "init_from": "models/../../x.h5"}},
                 "train.init_from", "outside the home"),
            Case("segy.file: a link in the home leading out", "paths",
                 {"kind": "import", "survey": "lnk", "segy": {"file": outward.name}}, "segy.file", "outside the home"),
            Case("picks: a FIFO", "paths", {**imp, "picks": {"files": [str(fifo)]}}, "picks.files.0",
                 "not a regular file"),
            Case("segy.file: /dev/zero", "paths", {"kind": "import", "survey": "dz", "segy": {"file": "/dev/zero"}},
                 "segy.file", "not a regular file"),
            Case("segy.file: a folder", "paths", {"kind": "import", "survey": "fo", "segy": {"file": str(folder)}},
                 "segy.file", "not a regular file"),
            Case("init_from: /dev/urandom", "paths", {**train_job(), "train": {"mode": "transfer",
                                                                              "init_from": "/dev/urandom"}},
                 "train.init_from", "not a regular file"),
            Case("user model: a FIFO", "paths",
                 {**train_job(), "model": {"name": "user", "params": {"path": str(fifo_py)}}}, "model.params.path",
                 "not a regular file"),
            Case("custom script: a FIFO", "paths", {"kind": "custom", "script": str(fifo)}, "script",
                 "not a regular file")]
    out += [Case("data.workers 256", "sizes", train_job(workers=256), "data.workers", "CPU"),
            Case("data.workers x ranks", "sizes", {**train_job(workers=os.cpu_count() or 1, batch_size=64),
                                                   "train": {"distributed": {"world_size": 64}}},
                 "data.workers", "CPU"),
            Case("batches_per_epoch 1e12", "sizes", train_job(batches_per_epoch=10**12), "data.batches_per_epoch",
                 "at most"),
            Case("batches_per_epoch 1e8", "sizes", train_job(batches_per_epoch=10**8), "data.batches_per_epoch",
                 "at most"),
            Case("val_batches 1e9", "sizes", train_job(val_batches=10**9), "data.val_batches", "memory"),
            Case("val_batches x batch 65536", "sizes", train_job(val_batches=100_000, batch_size=65536),
                 "data.val_batches", "memory"),
            Case("ring of 256 slots of 65536 crops", "sizes", {**train_job(ring_slots=256, batch_size=65536,
                                                                           crop={"size": [16, 64]})},
                 "data.ring_slots", "memory")]
    out += [Case("custom script over tcp", "code", {"kind": "custom", "script": str(script)}, "script",
                 "tcp.allow_code", "tcp"),
            Case("notebook over tcp", "code", {"kind": "custom", "notebook": str(scratch / "qc.ipynb")}, "notebook",
                 "tcp.allow_code", "tcp"),
            Case("user model over tcp", "code", {**train_job(), "model": {"name": "user",
                                                                           "params": {"path": str(model)}}},
                 "model.params.path", "tcp.allow_code", "tcp"),
            Case("SEG-Y outside the home over tcp, paths.inputs empty", "code",
                 {"kind": "import", "survey": "far", "segy": {"file": str(files / "f3.sgy")}}, "segy.file",
                 "paths.inputs", "tcp"),
            Case("picks outside the home over tcp, paths.inputs empty", "code",
                 {**imp, "picks": {"files": [str(files / "multi_sand_ilxl.pts")]}}, "picks.files.0",
                 "paths.inputs", "tcp")]
    return out


def submit(client: Client, case: Case) -> Outcome:
    """Submit the case's job; a job that is accepted is cancelled at once (it must not run)."""
    try:
        job_id = client.submit(case.job)["id"]
    except SeisdError as exc:
        return Outcome(case, exc.code == "invalid_job", exc.message, list(exc.details.get("problems", [])))
    try:
        client.cancel(job_id)
    except SeisdError:
        pass
    return Outcome(case, False, f"accepted as job {job_id}")


def run_cases(d: RunningDaemon, tcp: Client, all_cases: list[Case]) -> list[Outcome]:
    return [submit(tcp if c.via == "tcp" else d.client, c) for c in all_cases]


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def name_collision_losses(d: RunningDaemon, segy: Path) -> tuple[int, list[str]]:
    """Import `segy` as `g.partial`, then as `g` (and again as `g` once `g` is removed): how many of the checks of
    `g.partial` (still there, listed, unchanged) failed, and what each failure was."""
    c = d.client
    lost: list[str] = []
    done = wait_state(c, c.submit({"kind": "import", "survey": "g.partial", "segy": {"file": str(segy)}})["id"],
                      timeout=120)
    assert done["state"] == "succeeded", done
    folder = d.home / "surveys" / "g.partial"
    before = _tree_digest(folder)
    for _ in range(2):
        done = wait_state(c, c.submit({"kind": "import", "survey": "g", "segy": {"file": str(segy)}})["id"],
                          timeout=120)
        if done["state"] != "succeeded":
            lost.append(f"import of g: {done['state']} {done['error']}")
        if not (folder / "survey.json").is_file():
            lost.append("survey g.partial was deleted by the import of g")
            break
        if _tree_digest(folder) != before:
            lost.append("survey g.partial was changed by the import of g")
        if "g.partial" not in [s["name"] for s in c.call("survey.list")["surveys"]]:
            lost.append("survey g.partial is no longer listed")
        c.call("survey.rm", name="g")
    return len(lost), lost
