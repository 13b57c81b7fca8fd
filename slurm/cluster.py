"""Cluster settings -> submitit executors: the only module that knows sbatch flags.

``ClusterConfig`` is the ``slurm`` group of ``jobs.launch`` (``--slurm.gres ...``);
a site profile (``slurm/sites/<name>.yaml``) holds the same keys. The local
executor reads the time limit, signal delay, parallelism and requeue count from
it too, so a laptop run behaves like a cluster run.
"""

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
from argparse import ArgumentError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import submitit
from jsonargparse import ArgumentParser, Namespace

from slurm.queue import ControllerSilent
from slurm.submitit_private import sbatch_script
from videns.cli import strict_parser
from videns.errors import ConfigError, ExitCode

log = logging.getLogger(__name__)

Cluster = Literal["auto", "slurm", "local"]
SITE_ENV = "VIDENS_SITE"  # default site profile of every job that submits
SITES_DIR = Path(__file__).resolve().parent / "sites"
LOG_PATTERN = "%j"  # submitit turns it into <array id>_<index> for array elements
PING_TIMEOUT_S = 5


@dataclass
class ClusterConfig:
    """Resources and requeue policy of the member tasks (and the ensemble job).

    Args:
        partition: partition (queue); None uses the cluster's default.
        gres: generic resources per task; a MIG slice by default. A site's own type name
            (e.g. gpu:a100_1g.10gb:1) goes here; empty string requests none.
        cpus_per_task: CPU cores per member; also its torch thread count.
        mem_gb: host memory per member, in GiB (SLURM's --mem G).
        time_min: wall-clock limit of one run of a task; a requeued task gets it again.
        account: account to charge (--account); None for the default.
        qos: quality of service (--qos); None for the default.
        signal_delay_s: SIGUSR2 comes this many seconds before the time limit; the member
            saves at its next step and is requeued. Must exceed one step plus a save.
        array_parallelism: at most this many members run at once (the %N of --array); local
            runs also cap it by the machine's cores.
        max_requeue_on_timeout: how many times a task that hits its time limit is requeued
            (preemptions requeue without limit).
        setup: shell lines run before the task (module load ..., source venv/bin/activate).
        ensemble_time_min: wall-clock limit of the ensemble evaluation job.
        ensemble_gres: GRES of the ensemble job; None: same as the members.
        extra_sbatch: further sbatch flags, e.g. {constraint: a100, mail-type: FAIL}.
    """

    partition: str | None = None
    gres: str = "gpu:1g.10gb:1"
    cpus_per_task: int = 2
    mem_gb: float = 16.0
    time_min: int = 240
    account: str | None = None
    qos: str | None = None
    signal_delay_s: int = 120
    array_parallelism: int = 16
    max_requeue_on_timeout: int = 3
    setup: list[str] = field(default_factory=list)
    ensemble_time_min: int = 60
    ensemble_gres: str | None = None
    extra_sbatch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        problems = [
            f"slurm.{name} must be >= {low}, got {value}"
            for name, value, low in (
                ("cpus_per_task", self.cpus_per_task, 1),
                ("time_min", self.time_min, 1),
                ("signal_delay_s", self.signal_delay_s, 1),
                ("array_parallelism", self.array_parallelism, 1),
                ("max_requeue_on_timeout", self.max_requeue_on_timeout, 0),
                ("ensemble_time_min", self.ensemble_time_min, 1),
            )
            if value < low
        ]
        if self.mem_gb <= 0:
            problems.append(f"slurm.mem_gb must be > 0, got {self.mem_gb}")
        if self.signal_delay_s >= self.time_min * 60:
            problems.append(
                f"slurm.signal_delay_s ({self.signal_delay_s}) must be shorter than "
                f"slurm.time_min ({self.time_min} min), or USR2 would come at the start"
            )
        if problems:
            raise ConfigError("; ".join(problems))


def site_profile(name: str) -> Path:
    """``name`` as a path, or as ``slurm/sites/<name>.yaml``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"--site: no such file {path}")
        return path
    path = SITES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SITES_DIR.glob("*.yaml"))
        raise ConfigError(f"--site: no profile {name!r} in {SITES_DIR} (known: {', '.join(known) or 'none'})")
    return path


def add_cluster_arguments(parser: ArgumentParser) -> None:
    """``--site`` and the ``--slurm.*`` group. Their values come from :func:`site_defaults` and
    :func:`cluster_config`, in the second step of :func:`videns.cli.parse_with_resolved_defaults`."""
    parser.add_argument(
        "--site",
        type=str | None,
        default=None,
        help=f"Site profile: slurm/sites/<NAME>.yaml or a path (default ${SITE_ENV}); it sets the "
        "defaults of the --slurm.* options, and those given override it.",
    )
    parser.add_class_arguments(ClusterConfig, "slurm")


def site_defaults(decided: argparse.Namespace, base: Namespace) -> None:
    """The site profile that ``--site`` names (else $VIDENS_SITE), as the defaults of ``--slurm.*``."""
    name = decided.site or os.environ.get(SITE_ENV) or None
    if name is not None:
        base.slurm = load_site_profile(site_profile(name))


def load_site_profile(path: Path) -> Namespace:
    parser = strict_parser()
    parser.add_class_arguments(ClusterConfig)
    try:
        return parser.parse_path(path)
    except ArgumentError as err:
        raise ConfigError(f"site profile {path}: {' '.join(str(err).split())}") from None


def cluster_config(ns: Namespace) -> ClusterConfig:
    """The checked ``ClusterConfig`` of a namespace parsed with :func:`add_cluster_arguments`."""
    return ClusterConfig(**{k: v for k, v in ns.slurm.as_dict().items() if not k.startswith("__")})


# ---------------------------------------------------------------- choosing a cluster


def choose_cluster(requested: Cluster, launched_on: str | None = None) -> Literal["slurm", "local"]:
    """``auto``: SLURM when sbatch exists and the controller answers, else local (logged).

    ``launched_on``: where the run folder was launched before. ``auto`` never moves
    a SLURM run to this machine: a silent controller may still be running its jobs.
    """
    if requested != "auto":
        if requested == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "--cluster slurm: no sbatch on PATH (use --cluster local, or start "
                "the local SLURM with slurm/local/start.sh)"
            )
        return requested
    if launched_on == "slurm" and not (shutil.which("sbatch") and controller_answers()):
        raise ControllerSilent(
            "this run was launched on SLURM, and the SLURM controller does not answer "
            "'scontrol ping' here: nothing is started locally; relaunch once it answers, "
            "or pass --cluster local to run the members on this machine on purpose"
        )
    if shutil.which("sbatch") is None:
        log.info("no sbatch on PATH: running locally")
        return "local"
    if not controller_answers():
        log.warning("sbatch is installed but the SLURM controller does not answer 'scontrol ping': running locally")
        return "local"
    return "slurm"


def controller_answers() -> bool:
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and " is UP" in out.stdout


# ---------------------------------------------------------------- SLURM


def slurm_parameters(
    cfg: ClusterConfig,
    job_name: str,
    *,
    ensemble: bool = False,
    dependency: str | None = None,
    guard: Path | None = None,
    allow_shared_group: bool = False,
) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords for the member array or the ensemble job.

    ``guard``: the folder whose job files the task will unpickle; the script checks
    it (jobs.check_folder) before submitit reads anything from it, and stops there.
    """
    gres = cfg.ensemble_gres if ensemble and cfg.ensemble_gres is not None else cfg.gres
    extra: dict[str, Any] = {"requeue": True, **cfg.extra_sbatch}
    if dependency:
        extra["dependency"] = dependency
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": cfg.ensemble_time_min if ensemble else cfg.time_min,
        "cpus_per_task": cfg.cpus_per_task,
        "mem": _mem(cfg.mem_gb),
        "signal_delay_s": cfg.signal_delay_s,
        "array_parallelism": cfg.array_parallelism,
        "setup": [
            f"export PYTHONPATH={shlex.quote(str(code_root()))}${{PYTHONPATH:+:$PYTHONPATH}}",
            *cfg.setup,
            *([folder_guard(guard, allow_shared_group)] if guard is not None else []),
        ],
        "additional_parameters": extra,
    }
    optional = {"partition": cfg.partition, "account": cfg.account, "qos": cfg.qos, "gres": gres or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def folder_guard(folder: Path, allow_shared_group: bool) -> str:
    """The shell line that refuses a folder others could write into, before any of its pickles is loaded."""
    command = [sys.executable, "-m", "jobs.check_folder", "--folder", str(folder)]
    refused = f" || exit {int(ExitCode.USER_ERROR)}"
    return shlex.join(command + (["--allow_shared_group"] if allow_shared_group else [])) + refused


def slurm_executor(folder: Path, cfg: ClusterConfig, params: dict[str, Any]) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeue_on_timeout)
    executor.update_parameters(**params)
    return executor


def render_sbatch(folder: Path, params: dict[str, Any], array_size: int | None = None) -> str:
    """The sbatch script submitit would write, without needing srun or submitting anything."""
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return sbatch_script(command, folder, array_size, params)


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def code_root() -> Path:
    """The folder holding the ``jobs``, ``slurm`` and ``videns`` packages, so tasks import them from anywhere."""
    return Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- local


@dataclass
class LocalPlan:
    parallelism: int  # members at once
    threads: int  # torch threads per member


def local_plan(cfg: ClusterConfig, members: int, cpus: int | None = None) -> LocalPlan:
    """At least two members side by side (or fewer members), sharing the cores evenly."""
    cpus = cpus or os.cpu_count() or 1
    parallelism = max(1, min(members, cfg.array_parallelism, max(2, cpus // cfg.cpus_per_task)))
    return LocalPlan(parallelism=parallelism, threads=max(1, min(cfg.cpus_per_task, cpus // parallelism)))


def local_executor(folder: Path, cfg: ClusterConfig, ensemble: bool = False) -> submitit.LocalExecutor:
    """submitit's local executor: sends USR2 ``signal_delay_s`` before ``time_min`` and reruns a requeued task."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_root()), os.environ.get("PYTHONPATH")) if p)
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=cfg.max_requeue_on_timeout)
    executor.update_parameters(
        timeout_min=cfg.ensemble_time_min if ensemble else cfg.time_min, signal_delay_s=cfg.signal_delay_s
    )
    return executor


def local_task_env() -> dict[str, str | None]:
    """Environment a local task must restore: submitit's local executor sets CUDA_VISIBLE_DEVICES=""
    (no GPU asked), which would put every member on the CPU. None means "unset"."""
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
