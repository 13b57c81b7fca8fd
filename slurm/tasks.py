"""The picklable callables that submitit runs: one member, and the ensemble evaluation.

They hold only paths and a seed; everything else is found again on disk, so a
requeued task (whether submitit requeued it or SLURM did) simply runs again and
``train_member`` resumes from the newest valid checkpoint.

Signals, inside a member task:
- SIGUSR2 (time limit near, or preemption on clusters with preempt_send_user_signal):
  the loop saves at its next step boundary, then we hand over to submitit's own
  USR2 handler, which calls :meth:`MemberTask.checkpoint`, requeues the array
  element (``scontrol requeue``) and exits.
- SIGTERM (preemption on clusters without it, scancel, the hard time limit): save at
  the next step boundary, then, under SLURM, wait to be killed. SLURM requeues a
  preempted ``--requeue`` job only if it outlives its GraceTime: a job that exits by
  itself during the grace has ended for good. Elsewhere (local runs) exit 143.
- Once a task's work has succeeded, USR2 is ignored: nothing is left to save or requeue.
Nothing is saved inside a signal handler.
"""

import logging
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import submitit

from slurm.queue import job_allocation
from videns.ensemble.conformal import DEFAULT_COVERAGE
from videns.errors import ExitCode, UserError
from videns.folders import RunFolder, check_private, task_outcome_beside, use_private_umask
from videns.io import read_json, write_json_atomically

log = logging.getLogger(__name__)

TERM_WAIT_POLL_S = 5.0


class MemberTask:
    """Train (or continue) member ``seed`` of the run in ``run_dir``.

    ``env`` is set (None: unset) before anything touches CUDA; local runs use it to
    undo submitit's CUDA_VISIBLE_DEVICES="".
    """

    def __init__(
        self,
        run_dir: str,
        seed: int,
        threads: int | None = None,
        env: dict[str, str | None] | None = None,
        limits: tuple[float, float] | None = None,
    ):
        self.run_dir = str(run_dir)
        self.seed = int(seed)
        self.threads = threads
        self.env = env or {}
        self.limits = limits

    def __call__(self) -> dict[str, Any]:
        with outcome_recorded():
            return self._train()

    def _train(self) -> dict[str, Any]:
        import torch

        from videns.config import run_member_config
        from videns.member.train import train_member_logged

        apply_env(self.env)
        use_private_umask()
        run = RunFolder(Path(self.run_dir))
        cfg = run_member_config(run.config_for(self.seed), self.seed, run.member(self.seed).root)
        check_private(run.root, cfg.allow_shared_group)  # also where no sbatch guard ran (local runs)
        if self.threads:
            torch.set_num_threads(self.threads)
        context = job_context(self.limits)
        outcome = train_member_logged(
            cfg, context, on_stop=lambda stop, outcome: hand_over(stop, outcome.signum, f"seed {self.seed}")
        )
        return asdict(outcome)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit inside its USR2 handler: only build the resubmission; state is already on disk."""
        return submitit.helpers.DelayedSubmission(
            MemberTask(self.run_dir, self.seed, self.threads, self.env, self.limits)
        )

    def __repr__(self) -> str:
        return f"MemberTask(run_dir={self.run_dir!r}, seed={self.seed}, threads={self.threads})"


@dataclass
class EnsembleTask:
    """Evaluate the run's ensemble once the members are done; its summary goes to the task's stdout."""

    run_dir: str
    tta: bool = False
    combine: str = "mean"
    coverage: float = DEFAULT_COVERAGE
    mondrian: bool = False
    env: dict[str, str | None] = field(default_factory=dict)
    allow_shared_group: bool = False
    select: bool = False  # a run of a sweep's trials: select from its members, as from a library, into RUN/ensemble/

    def __call__(self) -> dict[str, Any]:
        from videns.ensemble.evaluate import EnsembleEvalConfig, evaluate_and_summarize

        apply_env(self.env)
        use_private_umask()
        with outcome_recorded():
            try:
                check_private(Path(self.run_dir), self.allow_shared_group)
                report = evaluate_and_summarize(
                    EnsembleEvalConfig(
                        **self._source(),
                        tta=self.tta,
                        combine=self.combine,
                        coverage=self.coverage,
                        mondrian=self.mondrian,
                    )
                )
            except UserError as err:  # a user's problem: one line in the log, the task failed
                print(f"ensemble evaluation: error: {err}", file=sys.stderr)
                raise
        return {"accuracy": report["ensemble"]["accuracy"]}

    def _source(self) -> dict[str, Any]:
        run = RunFolder(Path(self.run_dir))
        if self.select:
            return {"library": [run.root], "out_dir": run.ensemble.root}
        return {"run_dir": run.root}


@contextmanager
def outcome_recorded():
    """Record how the task ended, as JSON beside submitit's own files, so the launcher never unpickles.

    A SystemExit (a requeue, or a stop after a signal) records nothing: that run
    has not ended for good.
    """
    try:
        yield
    except Exception as err:
        _write_outcome({"status": "error", "error": f"{type(err).__name__}: {err}"})
        raise
    _write_outcome({"status": "success"})
    ignore_late_user_signal()


def ignore_late_user_signal() -> None:
    """A task whose work is done has nothing left to save or requeue, so a late USR2 must not end it.

    SLURM sends the time-limit USR2 up to a minute early. One that lands while Python
    shuts down, after it has put the default handlers back, killed a finished member
    (exit 140): SLURM recorded the job as FAILED although its work was complete.
    """
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def task_succeeded(job: submitit.Job) -> bool:
    """Whether a finished job's task returned normally, from its outcome JSON (never its result pickle)."""
    outcome = read_json(task_outcome_beside(job.paths.result_pickle))
    return bool(outcome) and outcome.get("status") == "success"


def _write_outcome(outcome: dict[str, Any]) -> None:
    try:
        paths = submitit.JobEnvironment().paths
    except RuntimeError:  # not inside a submitit job
        return
    write_json_atomically(task_outcome_beside(paths.result_pickle), outcome)


def apply_env(overrides: dict[str, str | None]) -> None:
    for name, value in overrides.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def hand_over(stop, signum: int | None, what: str) -> None:
    """The work is saved: let submitit requeue (USR2), or leave the requeue to SLURM (TERM)."""
    submitit_handler = stop.previous_handler(signal.SIGUSR2)
    if signum == signal.SIGUSR2 and callable(submitit_handler):
        log.info("%s: saved; handing over to submitit to requeue", what)
        submitit_handler(signal.SIGUSR2, None)  # checkpoint() + requeue + sys.exit; raises if it may not
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        log.info(
            "%s: saved after SIGTERM; waiting for SLURM to end this run (a preempted job is "
            "requeued only if it outlives its grace time)",
            what,
        )
        while True:  # bounded by the grace time, KillWait or the job's time limit
            time.sleep(TERM_WAIT_POLL_S)
    log.info(
        "%s: saved after %s; exiting %d",
        what,
        signal.Signals(signum).name if signum else "a stop request",
        ExitCode.STOPPED,
    )
    sys.exit(ExitCode.STOPPED)


def job_context(limits: tuple[float, float] | None = None) -> dict[str, Any]:
    """Job ids, restart count and allocation, added to every resource-monitor line of the member.

    ``limits``: (time limit, signal delay) in seconds, so that the member can tell a
    USR2 at its time limit from one sent by a preemption.
    """
    context: dict[str, Any] = {}
    try:
        env = submitit.JobEnvironment()
        context.update(cluster=env.cluster, job_id=env.job_id, array_task_id=env.array_task_id)
    except RuntimeError:  # not inside a submitit job (e.g. called in-process)
        pass
    context["restart_count"] = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    if context.get("cluster") == "slurm" and os.environ.get("SLURM_JOB_ID"):
        allocation = job_allocation(os.environ["SLURM_JOB_ID"])
        context["gres"] = allocation.gres
        if allocation.started is not None:  # the time limit counts from here, not from our imports
            context["run_started"] = allocation.started
    if limits is not None:
        context["time_limit_s"], context["signal_delay_s"] = limits
    return context
