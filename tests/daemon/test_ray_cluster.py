"""seisd on a Ray cluster of several nodes: Ray's own `ray.cluster_utils.Cluster` on this machine.

The cluster has a head (1 CPU, where the daemon's Ray client attaches) and two worker nodes (1 CPU each) started with
the custom resource `seisd` (and `seisd-node-<k>`, naming each). The daemon asks for `seisd: 1` on every task of a
job (`ray.resources_per_job`), so executors, ranks and shards run on the worker nodes only, never on the head; with
1 CPU a node, a job's second task (a rank, a shard) must go to the other worker node. The daemon binds its executor
socket on the wildcard `tcp://0.0.0.0:*`; each executor connects to the address its node resolved for the daemon
(the machine's address that Ray uses, not loopback, not the wildcard). Every test says which node ran what.

A killed node (its raylet and the worker processes on it) is in the long run (SEISD_LONG_TESTS=1): the job that ran
there is retried from its checkpoint on the other node, with the reason, and the jobs queued meanwhile run.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

pytest.importorskip("ray")

from daemon.common.ray_task import DaemonAddresses, reachable_endpoint  # noqa: E402
from tests.daemon.predict_data import home_with_unet, predict_job  # noqa: E402
from tests.daemon.test_distributed import job as ddp_job  # noqa: E402
from tests.daemon.test_train_job import import_demo  # noqa: E402
from tests.harness import ROOT, RunningDaemon, steps_job, wait_for, wait_state  # noqa: E402

LONG = os.environ.get("SEISD_LONG_TESTS") == "1"
NODE_LINE = re.compile(r"Ray node (\S+) ([0-9a-f]{56})")


@dataclass
class NodeCluster:
    cluster: Any                    # ray.cluster_utils.Cluster
    head: str                       # node ids
    workers: dict[str, Any]         # node id -> ray._private.node.Node

    @property
    def ip(self) -> str:
        return self.cluster.head_node.node_ip_address


@pytest.fixture(scope="module")
def cluster() -> Iterator[NodeCluster]:
    from ray.cluster_utils import Cluster

    # Ray's workers inherit this process's environment: they must import this checkout's daemon package
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([saved] if saved else []))
    # a dead node is noticed within about 2 s (Ray's default: 15 s and more)
    fast = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "_system_config": fast})
    try:
        workers = {}
        for k in (1, 2):
            node = c.add_node(num_cpus=1, resources={"seisd": 100, f"seisd-node-{k}": 1})
            workers[node.node_id] = node
        c.wait_for_nodes()
        yield NodeCluster(c, c.head_node.node_id, workers)
    finally:
        c.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def daemon(cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    env = {"SEISD_BACKEND": "ray", "SEISD_RAY__ADDRESS": cluster.cluster.address, "SEISD_RAY__SLOTS": "2",
           "SEISD_RAY__NUM_CPUS_PER_JOB": "1", "SEISD_RAY__MAX_RETRIES": "1", "SEISD_RAY__START_TIMEOUT_S": "120",
           "SEISD_RAY__EXECUTOR_ENDPOINT": "tcp://0.0.0.0:*", "SEISD_RAY__RESOURCES_PER_JOB": "{seisd: 1}"}
    with RunningDaemon(tmp_path_factory.mktemp("cluster") / "home", env=env, start_timeout=90) as d:
        yield d


def nodes_in(text: str) -> list[tuple[str, str]]:
    """(ip, node id) of every "Ray node IP ID" in a log."""
    return NODE_LINE.findall(text)


def job_node(d: RunningDaemon, job_id: int) -> tuple[str, str]:
    """(ip, node id) of the node whose executor ran the job's last attempt (its log's last "starting on ray:N
    (Ray node ...)" line)."""
    lines = wait_for(lambda: [ln for ln in d.client.logs(job_id)["text"].splitlines() if "starting on" in ln],
                     timeout=60, what=f"job {job_id} to start")
    return nodes_in(lines[-1])[0]


def run_ok(d: RunningDaemon, job: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    jid = d.client.submit(job)["id"]
    rec = wait_state(d.client, jid, timeout=timeout)
    assert rec["state"] == "succeeded", (rec, d.client.logs(jid)["text"])
    return rec


def test_a_wildcard_endpoint_resolves_to_the_daemons_address_each_node_reaches() -> None:
    daemon = DaemonAddresses("10.0.0.5", ("127.0.0.1/8", "10.0.0.5/16", "192.168.7.1/24", "fd00::1/64"))
    assert reachable_endpoint("tcp://0.0.0.0:5770", daemon, "10.0.3.9") == "tcp://10.0.0.5:5770"
    assert reachable_endpoint("tcp://*:5770", daemon, "192.168.7.20") == "tcp://192.168.7.1:5770"  # its network
    assert reachable_endpoint("tcp://0.0.0.0:5770", daemon, "172.16.0.2") == "tcp://10.0.0.5:5770"  # Ray's address
    assert reachable_endpoint("tcp://0.0.0.0:5770", daemon, "192.168.7.1") == "tcp://192.168.7.1:5770"  # same host
    assert reachable_endpoint("tcp://[::]:5770", daemon, "fd00::9") == "tcp://[fd00::1]:5770"
    for named in ("tcp://head.cluster:5770", "tcp://10.0.0.5:5770", "ipc:///run/seisd/executors.sock"):
        assert reachable_endpoint(named, daemon, "10.0.3.9") == named


def test_executors_run_on_worker_nodes_and_reach_the_daemon_at_its_address(cluster: NodeCluster,
                                                                          daemon: RunningDaemon) -> None:
    c = daemon.client
    bound = [conn.laddr for conn in psutil.Process(daemon.pid).net_connections(kind="tcp")
             if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == "0.0.0.0"]
    assert len(bound) == 1, bound  # the executor socket, on the wildcard
    ids = [c.submit(steps_job(steps=3000, step_s=0.02))["id"] for _ in range(2)]
    wait_for(lambda: all(c.show(j)["progress"] > 0 for j in ids), timeout=90, what="both jobs to run")
    nodes = {j: job_node(daemon, j) for j in ids}
    for slot in c.devices():
        executor = psutil.Process(slot["executor_pid"])
        peers = [conn.raddr for conn in executor.net_connections(kind="tcp") if conn.raddr
                 and conn.raddr.port == bound[0].port]
        # connected to the machine's address that Ray uses (the resolved wildcard), not to loopback or 0.0.0.0
        assert [p.ip for p in peers] == [cluster.ip] and not cluster.ip.startswith("127."), peers
        print(f"job {slot['job']}: executor pid {executor.pid} on node {nodes[slot['job']][1][:12]}, "
              f"connected to {peers[0].ip}:{peers[0].port}")
    for j in ids:
        c.cancel(j)
        assert wait_state(c, j, timeout=60)["state"] == "cancelled"
    ran_on = {node for _, node in nodes.values()}
    assert ran_on == set(cluster.workers), (nodes, cluster.workers)  # one job on each worker node, none on the head
    log = (daemon.home / "logs").glob("executor-ray*.log")
    assert any(f"connects to tcp://{cluster.ip}:{bound[0].port}" in p.read_text() for p in log)


def test_ranks_and_shards_run_on_other_nodes_than_their_executor(cluster: NodeCluster, daemon: RunningDaemon,
                                                                 tmp_path: Path) -> None:
    import_demo(daemon.client, tmp_path)
    rec = run_ok(daemon, ddp_job("cluster-ddp", 2))
    executor = job_node(daemon, rec["id"])[1]
    rank1 = nodes_in((Path(rec["dir"]) / "rank1.log").read_text())[0][1]
    print(f"train job {rec['id']}: rank 0 (the executor) on node {executor[:12]}, rank 1 on node {rank1[:12]}")
    assert {executor, rank1} == set(cluster.workers)  # 1 CPU a node: rank 1 had to go to the other worker node

    home_with_unet(daemon.home)
    rec = run_ok(daemon, predict_job("unet1", "synth", "cluster-shards", shards=2, outputs=["labels"],
                                     format="hdf5", chunk_inlines=4, figures={"enabled": False}))
    text = daemon.client.logs(rec["id"])["text"]
    shards = {int(m.group(1)): m.group(2) for m in re.finditer(r"shard (\d) \(inlines [\d-]+\) ran on Ray node "
                                                               r"\S+ ([0-9a-f]{56})", text)}
    print(f"predict job {rec['id']}: executor on node {job_node(daemon, rec['id'])[1][:12]}, "
          + ", ".join(f"shard {k} on node {v[:12]}" for k, v in sorted(shards.items())))
    assert sorted(shards) == [0, 1] and set(shards.values()) == set(cluster.workers), text


@pytest.mark.skipif(not LONG, reason="a killed node: SEISD_LONG_TESTS=1")
def test_a_lost_node_retries_its_job_on_another_node_and_the_queue_holds(cluster: NodeCluster,
                                                                        daemon: RunningDaemon) -> None:
    c = daemon.client
    lost = c.submit(steps_job(steps=1500, step_s=0.02))["id"]
    other = c.submit(steps_job(steps=250, step_s=0.02))["id"]
    wait_for(lambda: c.show(lost)["progress"] >= 0.02 and c.show(other)["state"] == "running", timeout=90,
             what="both jobs to run")
    queued = [c.submit(steps_job(steps=20, step_s=0.02))["id"] for _ in range(3)]  # no free slot: seisd's queue
    _, node_id = job_node(daemon, lost)
    node = cluster.workers.pop(node_id)
    print(f"job {lost} runs on node {node_id[:12]}: killing that node's raylet")
    node.kill_raylet()
    cluster.cluster.remove_node(node, allow_graceful=False)  # and the rest of the node, as a machine gone away
    rec = wait_state(c, lost, timeout=180)
    assert rec["state"] == "succeeded" and rec["attempts"] == 2, rec
    reasons = " | ".join(h["reason"] or "" for h in rec["history"])
    assert "Ray worker or node was lost" in reasons, reasons
    assert [h["state"] for h in rec["history"]] == ["queued", "running", "interrupted", "queued", "running",
                                                    "succeeded"]
    assert job_node(daemon, lost)[1] != node_id  # the retry ran elsewhere
    for j in [other, *queued]:
        assert wait_state(c, j, timeout=120)["state"] == "succeeded"
        assert nodes_in(c.logs(j)["text"])[-1][1] in cluster.workers
    print("history of the lost node's job:", [(h["state"], h["reason"]) for h in rec["history"]])
