"""A sweep worker: take a trial, train it as a member, tell the study, repeat until N are started.

Any number of workers (array tasks, or ``jobs.sweep --worker`` by hand) share one
run folder. A worker takes, under the sweep-wide lock, first a RUNNING trial whose
owner is dead (resumed from its checkpoint, same number and params), else a new
trial from ``study.ask`` while fewer than N trials exist. It stops when there is
neither, once every other RUNNING trial has shown that its owner lives (same host:
the process runs; another host: the claim's heartbeat moved), so a trial whose
owner died is picked up by whoever is still around. Finished = COMPLETE, PRUNED or
FAIL; a failing trial is recorded and the sweep goes on.
"""

import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from videns.errors import UserError
from videns.folders import SweepFolder
from videns.member.train import train_member
from videns.sweep.claims import ClaimHeartbeat, TrialClaims, WorkerIdentity, schedule_lock
from videns.sweep.export import export_results
from videns.sweep.settings import SweepSettings
from videns.sweep.space import suggest_all
from videns.sweep.study import load_study, worker_seed
from videns.sweep.trial import EpochReporter, final_value, read_history, trial_config, trial_log, write_trial_end
from videns.training.interrupt import StopSignals

log = logging.getLogger(__name__)
IDLE_POLL_S = 5.0


@dataclass
class Assignment:
    """A trial this worker now owns."""

    number: int
    trial: optuna.Trial
    params: dict[str, Any]
    resumed: bool
    reported: set[int] = field(default_factory=set)


@dataclass
class TrialResult:
    number: int
    state: str  # COMPLETE | PRUNED | FAIL | interrupted | lost
    value: float | None = None
    signum: int | None = None


@dataclass
class WorkerReport:
    """What one worker did."""

    worker_id: str
    trials: list[TrialResult] = field(default_factory=list)
    interrupted: bool = False
    signum: int | None = None


class TrialStop:
    """What train_member polls (StopSignals' interface): a signal arrived, or our claim was taken over."""

    def __init__(self, signals: StopSignals | None, heartbeat: ClaimHeartbeat):
        self.signals, self.heartbeat = signals, heartbeat

    @property
    def requested(self) -> bool:
        return (self.signals is not None and self.signals.requested) or self.heartbeat.lost

    @property
    def received(self) -> int | None:
        return self.signals.received if self.signals is not None else None


class Scheduler:
    """Decides, under the sweep lock, which trial this worker trains next."""

    def __init__(
        self, folder: SweepFolder, study: optuna.Study, claims: TrialClaims, me: WorkerIdentity, settings: SweepSettings
    ):
        self.folder, self.study, self.claims, self.me, self.settings = folder, study, claims, me, settings
        self.first_seen: dict[int, float | None] = {}  # remote claims: heartbeat mtime when first looked at

    def take_next(self, target: int) -> tuple[Assignment | None, bool]:
        """(the next trial, or None; whether to wait for another worker's trial to prove its owner alive)."""
        unproven = False
        with schedule_lock(self.folder):
            trials = self.study.get_trials(deepcopy=False)
            for frozen in trials:
                if frozen.state != TrialState.RUNNING:
                    continue
                owner = self.claims.owner_state(frozen.number, self.me)
                if owner in ("dead", "mine"):
                    self.claims.take(frozen.number, self.me, resumed=True)
                    trial = optuna.Trial(self.study, frozen._trial_id)  # the same trial, reattached
                    return Assignment(
                        frozen.number,
                        trial,
                        suggest_all(trial, self.settings.spec.space, self.settings.spec.conditional),
                        True,
                        set(frozen.intermediate_values),
                    ), False
                if owner == "remote":
                    mtime = self.claims.heartbeat_mtime(frozen.number)
                    unproven |= self.first_seen.setdefault(frozen.number, mtime) == mtime
            if len(trials) < target:
                trial = self.study.ask()
                self.claims.take(trial.number, self.me, resumed=False)
                params = suggest_all(trial, self.settings.spec.space, self.settings.spec.conditional)
                return Assignment(trial.number, trial, params, False), False
        return None, unproven


def run_worker(
    folder: SweepFolder, me: WorkerIdentity, stop: StopSignals | None = None, context: Mapping[str, Any] | None = None
) -> WorkerReport:
    """Train trials until N are started and none is orphaned; then refresh the exports."""
    settings = folder.settings()
    study = load_study(folder, settings.spec, _worker_seed(folder, settings, me))
    claims = TrialClaims(folder, settings.stale_after_s)
    scheduler = Scheduler(folder, study, claims, me, settings)
    report = WorkerReport(me.worker_id)
    log.info("sweep worker %s (host %s, pid %d) on %s", me.worker_id, me.host, me.pid, folder.root)
    while not (stop is not None and stop.requested):
        assignment, wait = scheduler.take_next(folder.settings().trials)  # a relaunch may have raised N
        if assignment is None:
            if not wait:
                break
            time.sleep(min(IDLE_POLL_S, settings.heartbeat_s))
            continue
        result = run_trial(folder, settings, assignment, claims, me, stop, context)
        report.trials.append(result)
        if result.state == "interrupted":
            report.interrupted, report.signum = True, result.signum
            break
    if stop is not None and stop.requested and not report.interrupted:
        report.interrupted, report.signum = True, stop.received
    with schedule_lock(folder):
        export_results(folder, study, settings)
    log.info(
        "sweep worker %s done: %d trial(s) here%s",
        me.worker_id,
        len(report.trials),
        " (stopped by a signal)" if report.interrupted else "",
    )
    return report


def run_trial(
    folder: SweepFolder,
    settings: SweepSettings,
    job: Assignment,
    claims: TrialClaims,
    me: WorkerIdentity,
    stop: StopSignals | None,
    context: Mapping[str, Any] | None,
) -> TrialResult:
    """Train (or continue) one trial's member and tell the study how it ended."""
    trial_dir, objective = folder.trial(job.number).root, settings.spec.objective
    with trial_log(trial_dir), ClaimHeartbeat(claims, job.number, me, settings.heartbeat_s) as heartbeat:
        log.info("trial %d %s: %s", job.number, "resumed" if job.resumed else "started", job.params)
        started = time.monotonic()
        try:
            cfg = trial_config(folder, job.number, job.params)
            reporter = EpochReporter(job.trial, objective, cfg.trainer.max_epochs, job.reported)
            if job.resumed:
                reporter.catch_up(trial_dir)
            member_context = {"sweep_trial": job.number, "sweep_worker": me.worker_id, **(context or {})}
            outcome = train_member(cfg, TrialStop(stop, heartbeat), member_context, on_epoch_end=reporter)
        except optuna.TrialPruned as pruned:
            return _finish(job, claims, me, trial_dir, TrialState.PRUNED, None, str(pruned), started)
        except Exception as err:  # noqa: BLE001 - one failing trial must not end the sweep
            log.error("trial %d failed: %s", job.number, err, exc_info=not isinstance(err, UserError))
            return _finish(
                job,
                claims,
                me,
                trial_dir,
                TrialState.FAIL,
                None,
                "".join(traceback.format_exception_only(err)).strip(),
                started,
            )
        if outcome.status == "interrupted":
            if heartbeat.lost:
                return TrialResult(job.number, "lost")
            claims.release(job.number, me)
            log.info("trial %d stopped at epoch %d; released for the next worker to resume", job.number, outcome.epoch)
            return TrialResult(job.number, "interrupted", signum=outcome.signum)
        value = final_value(trial_dir, objective)
        if value is None:
            return _finish(job, claims, me, trial_dir, TrialState.FAIL, None, "no best checkpoint was written", started)
        return _finish(job, claims, me, trial_dir, TrialState.COMPLETE, value, outcome.stop_reason, started)


def _finish(
    job: Assignment,
    claims: TrialClaims,
    me: WorkerIdentity,
    trial_dir,
    state: TrialState,
    value: float | None,
    note: str,
    started: float,
) -> TrialResult:
    if not claims.holds(job.number, me):
        log.warning(
            "trial %d ended here as %s, but another worker has taken it over; leaving it to them",
            job.number,
            state.name,
        )
        return TrialResult(job.number, "lost")
    study = job.trial.study
    if state == TrialState.COMPLETE:
        study.tell(job.trial, value, skip_if_finished=True)
    else:  # a pruned trial's value is its last reported one
        study.tell(job.trial, state=state, skip_if_finished=True)
    history = read_history(trial_dir)
    write_trial_end(
        trial_dir,
        {
            "number": job.number,
            "state": state.name,
            "value": value,
            "note": note,
            "params": job.params,
            "epochs": len(history),
            "worker": me.worker_id,
            "seconds_here": time.monotonic() - started,
        },
    )
    log.info("trial %d %s%s (%s)", job.number, state.name, f": {value:.4f}" if value is not None else "", note)
    return TrialResult(job.number, state.name, value)


def _worker_seed(folder: SweepFolder, settings: SweepSettings, me: WorkerIdentity) -> int:
    """Array task i of a fresh sweep gets the same seed every time; hand-started workers get their own."""
    key = f"task{me.task_index}" if me.task_index is not None else me.worker_id
    return worker_seed(settings.spec, f"{key}:{_trial_count(folder)}")


def _trial_count(folder: SweepFolder) -> int:
    return sum(1 for _ in folder.trials_dir.glob("trial_*"))
