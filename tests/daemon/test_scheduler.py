"""The scheduler's pure logic: single-slot order, multi-slot jobs (all or none) and the reservation against
starving them; `assign` and `one_writer` are functions of the queue and the free slots. Then one writer per name
through a real daemon of two slots, and what every kind says it writes."""
from __future__ import annotations

from dataclasses import dataclass

from daemon.server.scheduler import assign, device_available, group_accepts, groups, one_writer, slots_wanted

GPUS4 = ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


@dataclass
class Job:
    id: int
    device: str = "auto"


def test_single_slot_jobs_take_gpus_first_then_the_cpu_and_do_not_block_each_other() -> None:
    queued = [Job(1, "cuda:1"), Job(2, "auto"), Job(3, "cpu"), Job(4, "cuda")]
    pairs = assign(queued, ["cuda:0", "cpu"], {})
    assert pairs == [(2, "cuda:0"), (3, "cpu")]  # job 1's GPU is busy: it does not hold back 2 and 3
    assert assign([Job(1, "cuda"), Job(2, "auto")], ["cpu"], {}) == [(2, "cpu")]
    assert assign([Job(1, "auto")], ["cuda:0", "cpu"], {1: "cpu"}) == [(1, "cpu")]  # a CPU-only kind


def test_a_multi_slot_job_takes_all_its_gpus_at_once_first_slot_first() -> None:
    pairs = assign([Job(1, "cuda"), Job(2, "auto")], GPUS4 + ["cpu"], {}, wants={1: 3})
    assert pairs == [(1, "cuda:0"), (1, "cuda:1"), (1, "cuda:2"), (2, "cuda:3")]
    assert groups(pairs) == {1: ["cuda:0", "cuda:1", "cuda:2"], 2: ["cuda:3"]}
    # never the CPU as one of several slots, even for device auto
    assert assign([Job(1, "auto")], ["cuda:0", "cpu"], {}, wants={1: 2}) == []


def test_all_or_none_and_the_waiting_group_reserves_against_starving() -> None:
    queue = [Job(1, "cuda"), Job(2, "auto"), Job(3, "cpu"), Job(4, "auto")]
    # two GPUs busy: job 1 (4 GPUs) waits, and holds the two free ones; job 2 may use the CPU only
    pairs = assign(queue, ["cuda:2", "cuda:3", "cpu"], {}, wants={1: 4})
    assert pairs == [(2, "cpu")]
    # the busy GPUs free up: job 1 starts on all four before anything behind it
    assert assign(queue, GPUS4, {}, wants={1: 4}) == [(1, s) for s in GPUS4]


def test_only_the_first_waiting_group_reserves_and_higher_order_single_jobs_go_first() -> None:
    # a single job ahead of the group takes its GPU (order decides); the group then waits with what is left
    queue = [Job(9, "cuda"), Job(1, "cuda"), Job(5, "cuda"), Job(2, "cuda")]
    pairs = assign(queue, ["cuda:0", "cuda:1", "cuda:2"], {}, wants={1: 3, 5: 2})
    assert pairs == [(9, "cuda:0")]  # 1 reserves cuda:1, cuda:2; 5 (2 GPUs) and 2 find nothing unreserved
    # without the reservation job 2 would have taken a GPU now, and again each time one frees
    pairs = assign([Job(1, "cuda"), Job(2, "cuda")], ["cuda:1"], {}, wants={1: 2})
    assert pairs == []


def test_slots_wanted_and_submit_check() -> None:
    slots = GPUS4[:2] + ["cpu"]
    assert slots_wanted(2, "cuda", slots) == 2
    assert slots_wanted(2, "auto", slots) == 2
    assert slots_wanted(2, "auto", ["cpu"]) == 1   # Gloo ranks share the CPU slot
    assert slots_wanted(2, "cpu", slots) == 1
    assert slots_wanted(2, "cuda:1", slots) == 1   # one named device: its ranks cannot spread
    assert slots_wanted(1, "cuda", slots) == 1
    assert device_available("cuda", "any", slots, count=2)
    assert not device_available("cuda", "any", slots, count=3)     # 3 GPUs on a 2-GPU machine: refused
    assert not device_available("cuda", "any", ["cpu"], count=2)
    assert device_available("cpu", "any", ["cpu"]) and not device_available("cuda:3", "any", slots)
    assert not group_accepts("cuda:0", "cpu", "any", 2) and group_accepts("cuda:0", "auto", "any", 2)


def test_kinds_say_how_many_gpu_slots_their_jobs_want() -> None:
    """The kind's hook reads the typed spec, or the spec as the queue stores it (every default filled in)."""
    from daemon.kinds import get_kind
    from daemon.kinds.train_spec import TrainSpec

    train = TrainSpec.model_validate({"kind": "train", "output": "m", "data": {"survey": "s", "crop": {"size": [8, 8]}},
                                      "model": {"name": "unet"}, "train": {"distributed": {"world_size": 2}}})
    kind = get_kind("train")
    assert kind.slots_needed(train) == kind.slots_needed(train.model_dump(mode="json")) == 2
    assert kind.slots_needed(train.model_copy(update={"train": train.train.model_copy(update={
        "distributed": train.train.distributed.model_copy(update={"world_size": 1})})})) == 1
    assert kind.slots_needed({"kind": "train", "stored": "by an older seisd"}) == 1  # its executor fails it
    assert get_kind("predict").slots_needed({"kind": "predict"}) == 1  # no hook: one slot, nothing read


def test_a_sharded_predict_jobs_own_task_asks_a_cluster_for_no_cpu() -> None:
    """Its shards, tasks of their own, take the CPUs (the Ray backend asks for what the kind's hook says)."""
    from daemon.kinds import TaskResources, get_kind

    kind, per_job = get_kind("predict"), TaskResources(4.0, 1.0)
    job = {"kind": "predict", "model": "m", "survey": "s", "output": "p"}
    assert kind.task_resources(job, per_job) == per_job
    assert kind.task_resources({**job, "shards": 3}, per_job) == TaskResources(0.0, 1.0)
    assert get_kind("train").task_resources({}, per_job) == per_job  # no hook


def test_supervisor_places_a_group_holds_its_slots_busy_and_frees_them_when_the_job_leaves(tmp_path) -> None:
    """The supervisor's side, without executors: slots marked ready as running executors would leave them."""
    from daemon.server.backends.local import LaunchArgs, LocalBackend
    from daemon.common.devices import DeviceSlot, read_job_devices
    from daemon.common.settings import Settings
    from daemon.server.supervisor import Supervisor

    slots = [DeviceSlot(f"cuda:{i}", "cuda", i, "GPU") for i in range(3)] + [DeviceSlot("cpu", "cpu", None, "CPU")]
    backend = LocalBackend(Settings(devices="cpu"), LaunchArgs("ipc://none", tmp_path, None, tmp_path))
    changes: list[tuple[str, str, int | None]] = []
    sup = Supervisor(slots, backend, 30.0, 1.0, on_death=lambda h, why: None,
                     on_state=lambda h: changes.append((h.slot.name, h.state, h.job_id)))
    for h in sup.handles.values():
        h.state = "ready"
    queue = [Job(7, "cuda"), Job(8, "auto")]
    placed = sup.placements(queue, kind_devices=lambda j: "any", wants=lambda j: 2 if j.id == 7 else 1)
    assert [(job.id, [h.slot.name for h in hs]) for job, hs in placed] == [(7, ["cuda:0", "cuda:1"]),
                                                                           (8, ["cuda:2"])]
    first, helper = placed[0][1]
    first.job_id, first.state = 7, "busy"  # what the daemon does when it starts the job on its first slot
    assert sup.hold(first, [helper], 7, tmp_path / "job7") == [0, 1]  # the ranks' devices, the first slot's first
    assert read_job_devices(tmp_path / "job7") == [0, 1]  # recorded where the job's ranks read them
    assert (helper.describe()["state"], helper.describe()["job"]) == ("busy", 7)  # what `devices` shows
    assert not helper.idle and ("cuda:1", "busy", 7) in changes
    assert [(j.id, [h.slot.name for h in hs]) for j, hs in sup.placements([Job(9, "cuda")], lambda j: "any")] \
        == [(9, ["cuda:2"])]  # the held slot is not free
    sup.poll()
    assert helper.job_id == 7  # still held while the job runs on its first slot
    first.job_id, first.state = None, "ready"  # the job finished
    sup.poll()
    assert helper.idle and helper.describe()["job"] is None and helper.describe()["state"] == "ready"


def test_one_writer_keeps_back_what_a_running_or_earlier_job_writes() -> None:
    writes = {1: ("surveys/a",), 2: ("surveys/a",), 3: ("models/m",), 4: ("examples/e", "surveys/b"),
              5: ("surveys/b",), 6: (), 7: ("models/m",)}
    running = [Job(3)]
    queued = [Job(1), Job(2), Job(4), Job(5), Job(6), Job(7)]
    kept = one_writer(queued, running, lambda j: writes[j.id])
    # 2 waits behind 1 (same survey), 5 behind 4 (one of 4's names), 7 behind the running 3; 6 writes nothing shared
    assert [j.id for j in kept] == [1, 4, 6]
    assert [j.id for j in one_writer(queued, [], lambda j: writes[j.id])] == [1, 4, 6, 7]


def test_every_kind_that_writes_in_the_home_says_what() -> None:
    from daemon.kinds import get_kind

    cases = {"import": ({"kind": "import", "survey": "f3", "segy": {"file": "/x.sgy"}}, ("surveys/f3",)),
             "extract": ({"kind": "extract", "examples": "ex", "sources": [{"survey": "f3"}],
                          "crop": {"size": [8, 8]}}, ("examples/ex",)),
             "train": ({"kind": "train", "output": "m", "data": {"survey": "f3", "crop": {"size": [8, 8]}},
                        "model": {"name": "patchcnn"}}, ("models/m",)),
             "predict": ({"kind": "predict", "model": "m", "survey": "f3"}, ("predictions/m-f3",)),
             "suggest": ({"kind": "suggest", "model": "m", "survey": "f3"}, ("predictions/m-f3",)),
             "opendtect": ({"kind": "opendtect", "action": "import", "file": "/x.h5", "examples": "ex",
                            "survey": "s"}, ("examples/ex", "surveys/s"))}
    for name, (spec, want) in cases.items():
        kind = get_kind(name)
        assert kind.writes_to(kind.spec.model_validate(spec)) == want, name
        assert kind.writes_to(spec) == want, name  # a stored spec reads the same
    export = {"kind": "opendtect", "action": "export", "file": "/x.h5", "examples": "ex"}
    assert get_kind("opendtect").writes_to(export) == ()  # a file outside the home


def test_two_jobs_writing_one_survey_never_run_at_once(tmp_path) -> None:
    """Two slots (a stand-in GPU and the CPU): jobs writing different names run side by side, a job writing what a
    running job writes waits for it, whichever slot is free."""
    from tests.harness import RunningDaemon, stand_in_gpus, wait_state

    with RunningDaemon(tmp_path / "home", env=stand_in_gpus(tmp_path, 1)) as d:
        c = d.client
        steps = {"kind": "test.steps", "steps": 15, "step_s": 0.1}
        first = c.submit({**steps, "writes": ["surveys/x"]})["id"]
        second = c.submit({**steps, "writes": ["surveys/x"]})["id"]
        other = c.submit({**steps, "writes": ["surveys/y"]})["id"]
        records = {j: wait_state(c, j, timeout=60) for j in (first, second, other)}
        assert all(r["state"] == "succeeded" for r in records.values()), records
        a, b, o = records[first], records[second], records[other]
        assert o["started"] < a["finished"] and a["started"] < o["finished"]  # different names: side by side
        assert b["started"] >= a["finished"], (a, b)  # the same name: one after the other
        assert {a["slot"], o["slot"]} == {"cuda:0", "cpu"}
