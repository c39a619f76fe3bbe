"""Daemon settings: one schema with its defaults, validated at start.

Sources, later ones winning:
  1. the defaults in this schema (configs/daemon.yaml shows every one of them, and a test keeps the two equal),
  2. `$SEISD_HOME/daemon.yaml` when it exists,
  3. the file given with `seisd --config FILE`,
  4. environment variables `SEISD_<KEY>` for top-level keys and `SEISD_<SECTION>__<KEY>` for nested ones, values
     parsed as YAML (so `SEISD_EXECUTOR__CANCEL_GRACE_S=2` and `SEISD_PLUGINS='[tests.kinds]'` work).
`SEISD_HOME` itself chooses the home folder and is not a setting.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExecutorSettings(_Section):
    heartbeat_s: float = Field(1.0, gt=0, description="how often an executor says it is alive")
    heartbeat_timeout_s: float = Field(30.0, gt=0, description="silence after which an executor is declared hung "
                                       "and killed")
    cancel_grace_s: float = Field(10.0, ge=0, description="how long a cancelled job may take to stop before its "
                                  "executor is killed")
    start_timeout_s: float = Field(60.0, gt=0, description="how long a new executor may take to say hello")
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads each local executor computes with "
                                "(its OMP_NUM_THREADS: torch's threads, shared out among data-parallel ranks and "
                                "predict shards); null: the daemon's own OMP_NUM_THREADS, else one per core. Give "
                                "part of the cores on a machine shared with other work")
    restart_backoff_s: float = Field(1.0, ge=0, description="pause before restarting an executor that died")
    max_job_retries: int = Field(2, ge=0, le=100, description="times a job whose executor died (killed, out of "
                                 "memory, hung) is run again on a new one: train and predict resume from their "
                                 "checkpoint or written chunks, import and extract start over, others fail at once")


class LimitSettings(_Section):
    max_header_bytes: int = Field(1 << 20, ge=1024, description="largest JSON header of a request")
    max_message_bytes: int = Field(256 << 20, ge=1 << 16, description="largest request, header and arrays together")
    max_frames: int = Field(64, ge=1, description="most frames in one request")
    max_log_read_bytes: int = Field(1 << 20, ge=1024, description="most bytes one `logs` request returns")


class TcpSettings(_Section):
    endpoint: str | None = Field(None, description="e.g. tcp://0.0.0.0:5760; bound only with CURVE")
    events_endpoint: str | None = Field(None, description="PUB endpoint over tcp, e.g. tcp://0.0.0.0:5761")
    server_secret_key: str = Field("keys/server.key_secret", description="the daemon's CURVE secret key file, "
                                   "relative to the home unless absolute")
    authorized_keys: str = Field("keys/authorized", description="folder of authorised client public key files")
    allow_code: bool = Field(False, description="accept from tcp clients jobs that run a program (custom scripts "
                             "and notebooks, user models); false: only local clients may submit them")


class WorkerSettings(_Section):
    default_count: int = Field(2, ge=0, le=256, description="data worker processes per training job")
    # 5: as workers.worker.DEFAULT_NICE, WorkerPool's default (the daemon's settings import nothing of workers/)
    nice: int = Field(5, ge=0, le=19, description="nice value of data workers (Linux: also SCHED_BATCH), so they "
                      "fill the time training leaves and never preempt it or the desktop; 0 for equal footing")


class PathSettings(_Section):
    inputs: list[str] = Field(default_factory=list, description="folders job files may read from (SEG-Y, picks, "
                              "user models, scripts) besides the home; empty: local clients anywhere the daemon's "
                              "user may read, tcp clients the home only")


class ViewerSettings(_Section):
    bind_address: str = Field("127.0.0.1", description="address viewers listen on; anything but loopback exposes "
                              "them to the network (see docs/viewers.md for SSH tunnels instead)")
    health_interval_s: float = Field(5.0, gt=0, description="how often a running viewer is health-checked")
    start_timeout_s: float = Field(60.0, gt=0, description="how long a viewer may take to answer its first check")


class RaySettings(_Section):
    address: str | None = Field(None, description="the Ray cluster: 'local' (start a Ray instance for this daemon "
                                "and stop it with the daemon), 'auto' (the cluster this machine belongs to), "
                                "'ray://HOST:10001' or 'HOST:6379'; null: Ray's own default (RAY_ADDRESS)")
    slots: int = Field(2, ge=1, le=1024, description="jobs seisd runs on Ray at once")
    num_cpus_per_job: float = Field(1.0, ge=0, description="CPUs a job asks Ray for")
    num_gpus_per_job: float = Field(0.0, ge=0, description="GPUs a job asks Ray for (0: jobs run on CPUs; jobs "
                                    "asking for device cpu, and CPU-only kinds such as import, always ask for none)")
    local_num_cpus: int | None = Field(None, ge=1, description="CPUs of the instance started with address 'local' "
                                       "(null: all of this machine's)")
    max_retries: int = Field(1, ge=0, le=100, description="executor.max_job_retries for jobs on Ray: times a job "
                             "whose executor, Ray worker or node was lost is run again")
    start_timeout_s: float = Field(300.0, gt=0, description="how long a job may wait for Ray to place and start "
                                   "its executor (cluster resources may be busy)")
    executor_endpoint: str | None = Field(None, description="tcp endpoint the daemon binds for executors on other "
                                          "nodes, e.g. tcp://0.0.0.0:5770 (CURVE, keys made in the home); null: "
                                          "the ipc socket, enough when Ray runs on this machine only")
    shared_home: str | None = Field(None, description="the daemon's home as every Ray node sees it (a shared file "
                                    "system); null: the same path as here")
    resources_per_job: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources every task of a job asks for (its executor, "
        "ranks and shards), e.g. {seisd: 1}: jobs then run only on nodes started with that resource "
        "(`ray start --resources '{\"seisd\": 100}'`)")


class OpendtectSettings(_Section):
    enabled: bool = Field(False, description="serve OpendTect's apply-server framing (docs/opendtect.md) on "
                          "<runtime folder>/opendtect.sock")
    tcp_port: int | None = Field(None, ge=0, le=65535, description="listen on 127.0.0.1:PORT instead (0: any free "
                                 "port, shown by `seisctl status`); never on another address")
    model: str | None = Field(None, description="the seisd model served when a parameters request names none")
    device: str = Field("auto", description="where the model is kept warm: auto, cpu, cuda, cuda:N (prefercpu "
                        "in a parameters request asks for cpu)")


class Settings(_Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    home_access: Literal["owner", "group"] = Field(
        "owner", description="who may read the home, its database and logs: 'owner' (umask 077: folders 0700, "
        "files 0600) or 'group' (umask 027: 0750, 0640); looser modes found at start are tightened")
    devices: Literal["auto", "cpu"] | list[str] = Field(
        "auto", description="'auto' (every CUDA device, and the CPU), 'cpu', or a list such as [cuda:0, cpu]")
    backend: Literal["local", "ray"] = Field("local", description="where executors run: 'local' (one per device "
                                             "of this machine) or 'ray' (one per job on a Ray cluster, see "
                                             "docs/scale-out.md)")
    plugins: list[str] = Field(default_factory=list, description="modules imported at start that register extra "
                               "job kinds (tests use this)")
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    tcp: TcpSettings = Field(default_factory=TcpSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    viewers: ViewerSettings = Field(default_factory=ViewerSettings)
    paths: PathSettings = Field(default_factory=PathSettings)
    ray: RaySettings = Field(default_factory=RaySettings)
    opendtect: OpendtectSettings = Field(default_factory=OpendtectSettings)


class SettingsError(ValueError):
    """Settings that do not fit the schema; the message lists every problem with its source."""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("SEISD_") or name in ("SEISD_HOME", "SEISD_ENDPOINT", "SEISD_DAEMON_PID"):
            continue
        if name.startswith(("SEISD_SHM_", "SEISD_CLIENT_", "SEISD_SERVER_", "SEISD_OWNER")):
            continue  # read by other components (SEISD_OWNER*: the marker of seisd's processes), not settings
        path = name[len("SEISD_"):].lower().split("__")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_settings(home: Path, config_file: Path | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Merge the sources and validate once. Raises SettingsError naming every bad key."""
    data: dict[str, Any] = {}
    home_file = home / "daemon.yaml"
    if home_file.is_file():
        data = _merge(data, _read_yaml(home_file))
    if config_file is not None:
        data = _merge(data, _read_yaml(config_file))
    data = _merge(data, _from_env(dict(os.environ if environ is None else environ)))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("invalid daemon settings:\n  " + "\n  ".join(problems)) from None


def defaults_yaml() -> str:
    """Every setting with its default, as YAML with the descriptions as comments (configs/daemon.yaml)."""
    lines = ["# seisd daemon settings: every key with its default.",
             "# Copy to $SEISD_HOME/daemon.yaml or pass with `seisd --config FILE`; environment variables",
             "# SEISD_<KEY> / SEISD_<SECTION>__<KEY> override both. Generated by `seisd --print-defaults`."]
    _emit(Settings(), Settings, lines, 0)
    return "\n".join(lines) + "\n"


def _emit(obj: BaseModel, cls: type[BaseModel], lines: list[str], indent: int) -> None:
    pad = "  " * indent
    for name, info in cls.model_fields.items():
        value = getattr(obj, name)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit(value, type(value), lines, indent + 1)
        else:
            dumped = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()
            lines.append(f"{pad}{dumped[1:-1] if dumped.startswith('{') else dumped}")
