"""Carry out a checked launch: write the run folder, then submit to SLURM or run the same tasks here.

Member i trains seed ``--seed + i`` into RUN/members/seed_<seed>/. A relaunch
continues the run: finished members take no queue slot, unfinished ones resume
from their last checkpoint, and new seeds (a larger ``--array``) start fresh.
"""

import os
import shlex
import socket
import sys
import uuid
from dataclasses import asdict

from slurm.cluster import LOG_PATTERN, choose_cluster, local_plan, render_sbatch, slurm_parameters
from slurm.launch_plan import LaunchPlan
from slurm.records import git_revision, now_iso
from slurm.status import print_status
from slurm.submit import Submitted, job_name, print_ensemble_output, run_local, submit_slurm, wait_slurm
from slurm.tasks import EnsembleTask
from videns.config import dump_run_config
from videns.data.demo import write_demo_data
from videns.errors import ExitCode
from videns.folders import make_private
from videns.io import write_json_atomically, write_text_atomically
from videns.member.state import TASKS_KEY, launched_task

PROG = "jobs.launch"


def launch(plan: LaunchPlan, args: list[str]) -> int:
    """Dry-run, submit or run the plan; the exit code of ``jobs.launch``."""
    launched_on = plan.run.launch().get("cluster")
    if plan.dry_run:
        print_dry_run(plan, choose_cluster(plan.cluster, launched_on) if plan.cluster == "auto" else plan.cluster)
        return 0
    cluster = choose_cluster(plan.cluster, launched_on)
    write_run(plan, cluster, args)
    if cluster == "slurm":
        submitted = submit_slurm(plan.run, plan.to_train, plan.slurm, evaluation(plan))
        record_jobs(plan, submitted)
        print_submitted(plan, submitted)
        if not plan.wait:
            return 0
        wait_slurm(submitted)
        print_ensemble_output(plan.run, submitted.ensemble_job_id)
        return print_status(plan.run)
    try:
        submitted = run_local(
            plan.run, plan.to_train, plan.slurm, evaluation(plan), say=print, on_submit=lambda s: record_jobs(plan, s)
        )
    except KeyboardInterrupt:
        print(
            f"stopped; the same command (or: python -m {PROG} --run_dir {plan.run.root}) resumes the run",
            file=sys.stderr,
        )
        return ExitCode.CTRL_C
    print(f"run folder: {plan.run.root}\nreport: {plan.run.ensemble.report_json}")
    return ExitCode.OK if submitted.ensemble_ok and not submitted.failed_members else ExitCode.FAILED


def evaluation(plan: LaunchPlan) -> EnsembleTask:
    """The dependent job's task: evaluate every member of the run as the launch asked."""
    return EnsembleTask(
        str(plan.run.root),
        tta=plan.tta,
        combine=plan.combine,
        coverage=plan.coverage,
        mondrian=plan.mondrian,
        allow_shared_group=plan.member.allow_shared_group,
        select=plan.selection is not None,
    )


def write_run(plan: LaunchPlan, cluster: str, args: list[str]) -> None:
    if plan.generate_demo:
        print(f"writing demo data into {plan.member.data.root}")
        write_demo_data(plan.member.data.root)
    for folder in (plan.run.root, plan.run.members_dir, plan.run.logs):
        make_private(folder)
    write_text_atomically(plan.run.config, dump_run_config(plan.member))
    write_member_configs(plan)
    plan.run.write_launch(
        {
            "launch_id": uuid.uuid4().hex,
            plan.run.LAUNCH_SEEDS_KEY: plan.seeds,
            "trained": plan.to_train,
            TASKS_KEY: {str(seed): launched_task(plan.config_of(seed), seed) for seed in plan.to_train},
            "cluster": cluster,
            "submitted": now_iso(),
            "git_revision": git_revision(),
            "command": shlex.join(["python", "-m", PROG, *args]),
            "config_hash": plan.member.config_hash,
            "slurm": asdict(plan.slurm),
            "launcher": {"host": socket.gethostname(), "pid": os.getpid()},
        }
    )


def write_member_configs(plan: LaunchPlan) -> None:
    """--from_sweep: each member's own config, then the record of which trial each member retrains."""
    if plan.selection is None:
        return
    make_private(plan.run.member_configs_dir)
    for seed, cfg in plan.member_configs.items():
        write_text_atomically(plan.run.member_config(seed), dump_run_config(cfg))
    write_json_atomically(plan.run.from_sweep_file, plan.selection.to_json())


def record_jobs(plan: LaunchPlan, submitted: Submitted) -> None:
    """Add the job ids to this launch's record; members finished earlier keep their last job id."""
    record = plan.run.launch()
    earlier = {k: v for old in record.get("previous", []) for k, v in old.get("member_job_ids", {}).items()}
    record.update(
        array_job_id=submitted.array_job_id,
        member_job_ids={
            **{str(s): earlier[str(s)] for s in plan.seeds if str(s) in earlier},
            **{str(s): j for s, j in submitted.member_job_ids.items()},
        },
        ensemble_job_id=submitted.ensemble_job_id,
    )
    plan.run.write_launch(record)


def print_submitted(plan: LaunchPlan, submitted: Submitted) -> None:
    run = plan.run.root
    ids = ", ".join(f"seed {s} -> {j}" for s, j in submitted.member_job_ids.items()) or "none"
    done = [s for s in plan.seeds if s not in plan.to_train]
    print(
        f"run folder: {run}\n"
        f"members:    array job {submitted.array_job_id or '-'} ({ids})"
        + (f"; already finished: {', '.join(map(str, done))}" if done else "")
        + "\n"
        f"ensemble:   job {submitted.ensemble_job_id} "
        + ("(afterany: runs once every member has ended)\n" if submitted.array_job_id else "(every member is done)\n")
        + f"follow:     python -m jobs.status --run_dir {run}\n"
        f"            squeue -j {','.join(filter(None, (submitted.array_job_id, submitted.ensemble_job_id)))}\n"
        + (f"            tail -f {plan.run.member(plan.to_train[0]).log}\n" if plan.to_train else "")
        + f"report:     {plan.run.ensemble.report_json} (when the ensemble job is done)"
    )


def print_dry_run(plan: LaunchPlan, cluster: str) -> None:
    folder = plan.run.logs / LOG_PATTERN
    guard = {"guard": plan.run.root, "allow_shared_group": plan.member.allow_shared_group}
    members = slurm_parameters(plan.slurm, job_name(plan.run), **guard)
    dependency = "afterany:<array job id>" if plan.to_train else None
    name = job_name(plan.run) + "-ensemble"
    ensemble = slurm_parameters(plan.slurm, name, ensemble=True, dependency=dependency, **guard)
    array = len(plan.to_train) if len(plan.to_train) > 1 else None
    print(f"# dry run: nothing written, nothing submitted. Run folder would be {plan.run.root}")
    if cluster == "local":
        local = local_plan(plan.slurm, len(plan.to_train))
        print(
            f"# --cluster resolved to local: {len(plan.to_train)} member(s) would run here, {local.parallelism} "
            f"at a time with {local.threads} thread(s); below is what a SLURM cluster would get."
        )
    if plan.selection is not None:
        trained = ", ".join(f"seed {seed} <- trial {trial}" for seed, trial in plan.selection.members.items())
        print(f"# from sweep {plan.selection.sweep}: {trained}")
    print(
        f"# member array: seeds {plan.to_train}"
        + (
            f" (finished already: {sorted(set(plan.seeds) - set(plan.to_train))})"
            if len(plan.to_train) < len(plan.seeds)
            else ""
        )
    )
    if plan.to_train:
        print(render_sbatch(folder, members, array))
    print("# ensemble job, submitted with the array's id" if plan.to_train else "# ensemble job (every member is done)")
    print(render_sbatch(folder, ensemble))
