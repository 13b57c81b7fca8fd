"""Train an ensemble, one SLURM array task per seed, then evaluate it in a dependent job.

    python -m jobs.launch --array 4 [--config configs/ensemble.yaml] [--cluster auto|slurm|local]
                          [--run_dir results/<config name>] [--site NAME] [--slurm.KEY VALUE ...]
                          [--dry_run] [--wait] [--force] [member overrides: --trainer.max_epochs 20 ...]

Member i trains seed ``--seed + i`` (base 42) into RUN/members/seed_<seed>/. Running
the same command again continues the run: finished members return at once,
unfinished ones resume from their last checkpoint. ``--cluster auto`` uses SLURM
when its controller answers, otherwise runs the same tasks here and waits.
"""

import os
import shlex
import socket
import sys
import uuid
from dataclasses import asdict

from jobs._cli import user_errors_as_one_line
from jobs._cluster import choose_cluster, local_plan, render_sbatch, slurm_parameters
from jobs._launch_plan import LaunchPlan, plan_launch
from jobs._run import git_revision, now_iso
from jobs._submit import Submitted, job_name, print_ensemble_output, run_local, submit_slurm, wait_slurm
from jobs.status import print_status
from videns.config import dump_config
from videns.data.demo import write_demo_data
from videns.logs import setup_logging

PROG = "jobs.launch"
INTERRUPTED_EXIT = 130  # as a shell reports Ctrl-C


def main(args: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    setup_logging()
    with user_errors_as_one_line(PROG):
        plan = plan_launch(args)  # every check happens here, before anything is written
        if plan.dry_run:
            print_dry_run(plan, choose_cluster(plan.cluster) if plan.cluster == "auto" else plan.cluster)
            return 0
        cluster = choose_cluster(plan.cluster)
    write_run(plan, cluster, args)
    if cluster == "slurm":
        submitted = submit_slurm(plan.run, plan.seeds, plan.slurm, plan.tta)
        record_jobs(plan, submitted)
        print_submitted(plan, submitted)
        if not plan.wait:
            return 0
        wait_slurm(submitted)
        print_ensemble_output(plan.run, submitted.ensemble_job_id)
        return print_status(plan.run)
    try:
        submitted = run_local(plan.run, plan.seeds, plan.slurm, plan.tta, say=print,
                              on_submit=lambda s: record_jobs(plan, s))
    except KeyboardInterrupt:
        print(f"stopped; the same command (or: python -m jobs.launch --run_dir {plan.run.root}) resumes the run",
              file=sys.stderr)
        return INTERRUPTED_EXIT
    print(f"run folder: {plan.run.root}\nreport: {plan.run.report}")
    return 0 if submitted.ensemble_ok and not submitted.failed_members else 1


def write_run(plan: LaunchPlan, cluster: str, args: list[str]) -> None:
    if plan.generate_demo:
        print(f"writing demo data into {plan.member.data.root}")
        write_demo_data(plan.member.data.root)
    plan.run.root.mkdir(parents=True, exist_ok=True)
    plan.run.config.write_text(dump_config(plan.member))
    plan.run.write_launch({
        "launch_id": uuid.uuid4().hex, "seeds": plan.seeds, "cluster": cluster, "submitted": now_iso(),
        "git_revision": git_revision(), "command": shlex.join(["python", "-m", PROG, *args]),
        "config_hash": plan.member.config_hash, "slurm": asdict(plan.slurm),
        "launcher": {"host": socket.gethostname(), "pid": os.getpid()},
    })


def record_jobs(plan: LaunchPlan, submitted: Submitted) -> None:
    record = plan.run.launch()
    record.update(array_job_id=submitted.array_job_id,
                  member_job_ids={str(s): j for s, j in submitted.member_job_ids.items()},
                  ensemble_job_id=submitted.ensemble_job_id)
    plan.run.write_launch(record)


def print_submitted(plan: LaunchPlan, submitted: Submitted) -> None:
    run = plan.run.root
    ids = ", ".join(f"seed {s} -> {j}" for s, j in submitted.member_job_ids.items())
    print(f"run folder: {run}\n"
          f"members:    array job {submitted.array_job_id or '-'} ({ids})\n"
          f"ensemble:   job {submitted.ensemble_job_id} (afterany: runs once every member has ended)\n"
          f"follow:     python -m jobs.status --run_dir {run}\n"
          f"            squeue -j {submitted.array_job_id},{submitted.ensemble_job_id}\n"
          f"            tail -f {plan.run.member(plan.seeds[0]) / 'train.log'}\n"
          f"report:     {plan.run.report} (when the ensemble job is done)")


def print_dry_run(plan: LaunchPlan, cluster: str) -> None:
    folder = plan.run.logs / "%j"
    members = slurm_parameters(plan.slurm, job_name(plan.run))
    ensemble = slurm_parameters(plan.slurm, job_name(plan.run) + "-ensemble", ensemble=True,
                                dependency="afterany:<array job id>")
    array = len(plan.seeds) if len(plan.seeds) > 1 else None
    print(f"# dry run: nothing written, nothing submitted. Run folder would be {plan.run.root}")
    if cluster == "local":
        local = local_plan(plan.slurm, len(plan.seeds))
        print(f"# --cluster resolved to local: {len(plan.seeds)} member(s) would run here, {local.parallelism} "
              f"at a time with {local.threads} thread(s); below is what a SLURM cluster would get.")
    print(f"# member array: seeds {plan.seeds}, task i trains seed {plan.seeds[0]} + i")
    print(render_sbatch(folder, members, array))
    print("# ensemble job, submitted with the array's id")
    print(render_sbatch(folder, ensemble))


if __name__ == "__main__":
    sys.exit(main())
