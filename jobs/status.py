"""Where a run stands: ``python -m jobs.status --run_dir RUN``.

One line per member (state, epoch, best val accuracy, restarts, job id) and the
ensemble job's state. States come from SLURM (scontrol, or sacct once scontrol
forgot the job) when the run was launched there, else from the run folder:
pending, running, requeued, done, failed; ``stopped`` is a local member that is
neither running nor finished (relaunch to resume it).
"""

import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from jobs._cli import user_errors_as_one_line
from jobs._queue import query_jobs
from jobs._run import RunFolder, ensemble_state, format_rows, launcher_running, member_row
from videns.errors import ConfigError

PROG = "jobs.status"


def main(args: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", type=Path, required=True, help="The run folder that jobs.launch wrote.")
    with user_errors_as_one_line(PROG):
        run = RunFolder(parser.parse_args(args).run_dir)
        if not run.launch_file.exists():
            raise ConfigError(f"{run.root}: no {run.launch_file.name}; not a run folder written by jobs.launch")
        return print_status(run)


def print_status(run: RunFolder) -> int:
    """Print the table; 0 when every member and the ensemble are done, 1 when any failed, else 3."""
    launch = run.launch()
    member_ids = {int(s): j for s, j in launch.get("member_job_ids", {}).items()}
    ensemble_id = launch.get("ensemble_job_id", "")
    slurm = query_jobs([*member_ids.values(), ensemble_id]) if launch.get("cluster") == "slurm" else None
    launcher_alive = launch.get("cluster") == "local" and launcher_running(launch)
    rows = [member_row(run, seed, member_ids.get(seed, ""), (slurm or {}).get(member_ids.get(seed, "")),
                       launcher_alive) for seed in launch.get("seeds", [])]
    ensemble = ensemble_state(run, ensemble_id, (slurm or {}).get(ensemble_id), launcher_alive)
    print(f"run {run.root} ({launch.get('cluster', '?')}, launched {launch.get('submitted', '?')})")
    print(format_rows(rows), end="")
    report = f"; report {run.report}" if run.report.exists() else ""
    print(f"ensemble: {ensemble}" + (f" (job {ensemble_id})" if ensemble_id else "") + report)
    states = {r.state for r in rows} | {ensemble}
    if "failed" in states:
        return 1
    return 0 if states == {"done"} else 3


if __name__ == "__main__":
    sys.exit(main())
