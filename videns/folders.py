"""The on-disk layout of runs, members, sweeps and trials: the one module that spells their file names.

Writers and readers alike take paths from here, so a name changes in one place::

    RUN/config.yaml                    the run's member config, without any one member's seed or out_dir
    RUN/launch.json                    the launcher's record: seeds, job ids, cluster (+ earlier launches)
    RUN/members/seed_<N>/              one member (MemberFolder)
    RUN/member_configs/seed_<N>.yaml   a member's own config where members differ (jobs.launch --from_sweep)
    RUN/from_sweep.json                which sweep trials the run retrains, and each member's trial
    RUN/ensemble/                      the ensemble evaluation (EnsembleFolder)
    RUN/logs/<job id>/                 submitit's files, and <job id>_<task>_outcome.json per finished task

    RUN/.lock                          held (flock) by the one launcher that may write the run folder

    MEMBER/.lock                       held (flock) by the one process that trains the member
    MEMBER/config.yaml                 the member's exact config (its own seed and out_dir)
    MEMBER/train.log                   one line per epoch, and every event
    MEMBER/progress.json               where training stands, rewritten at every save
    MEMBER/result.json                 how it finished (only once finished)
    MEMBER/history.jsonl               one record per finished epoch
    MEMBER/resources.jsonl             the resource monitor's samples
    MEMBER/restarts.jsonl              one line per restart: cause, steps replayed, time queued
    MEMBER/reached_step                the highest step reached (8 bytes, rewritten every step)
    MEMBER/checkpoints/step-<N>/       resumable checkpoints (format: videns.checkpoint.store)
    MEMBER/best -> best-epoch-<E>/     the best model so far (model weights + best.json)

    SWEEP/sweep.json                   the search and how many trials to finish
    SWEEP/base_config.yaml             the member config every trial starts from
    SWEEP/study.journal                optuna's journal
    SWEEP/launches.jsonl               one line per launch of the sweep
    SWEEP/trials/trial_<n>/            one trial (TrialFolder: a MemberFolder plus trial_config.yaml,
                                       claim.json, trial.json)
    SWEEP/trials.csv, trials_top10.md, best_config.yaml, best_member/   the sweep's results
    SWEEP/logs/<job id>/               submitit's files of the workers

    DIR/library_ensemble/              an ensemble selected from a library of runs and sweeps (an EnsembleFolder;
                                       by default inside the first --library DIR of jobs.ensemble_eval)

    GPUCHECK/gpu_check.json            every part's status and figures (jobs.gpu_check)
    GPUCHECK/summary.md                the same, short, for people
    GPUCHECK/gpu_check.log             the check's own log, with the output of any part that failed
    GPUCHECK/cuda-tests.xml            pytest -m cuda's junit XML
    GPUCHECK/bench-cuda.json           the bench's CUDA section
"""

import json
import logging
import os
import pwd
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from videns.errors import ConfigError
from videns.io import read_json, write_json_atomically

if TYPE_CHECKING:
    from videns.sweep.settings import SweepSettings

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
LOGS_DIR = "logs"
# submitit names a task's files <job id>_<task>_*; ours sits beside its result pickle.
TASK_OUTCOME_SUFFIX = "_outcome.json"
BENCH_LOGS_DIR = "bench-logs"
PREDICT_LOGS_DIR = "predict-logs"
LIBRARY_ENSEMBLE_DIR = "library_ensemble"
_SEED_FOLDER = re.compile(r"^seed_(-?\d+)$")
_TRIAL_FOLDER = re.compile(r"^trial_(\d+)$")


class MemberFolder:
    """One member's files (also the body of a sweep trial)."""

    BEST_PREFIX = "best-epoch-"

    def __init__(self, root: Path):
        self.root = Path(root)

    LOG = "train.log"

    config = property(lambda self: self.root / CONFIG_FILE)
    log = property(lambda self: self.root / self.LOG)
    progress_file = property(lambda self: self.root / "progress.json")
    result_file = property(lambda self: self.root / "result.json")
    history = property(lambda self: self.root / "history.jsonl")
    resources = property(lambda self: self.root / "resources.jsonl")
    restarts = property(lambda self: self.root / "restarts.jsonl")
    reached_step = property(lambda self: self.root / "reached_step")
    checkpoints = property(lambda self: self.root / "checkpoints")
    lock = property(lambda self: self.root / LOCK_FILE)
    tensorboard = property(lambda self: self.root / "tensorboard")
    best = property(lambda self: self.root / "best")
    BEST_META = "best.json"

    def best_version(self, epoch: int) -> Path:
        """Where the best model of ``epoch`` is written before ``best`` points to it."""
        return self.root / f"{self.BEST_PREFIX}{epoch:04d}"

    def best_versions(self) -> list[Path]:
        return sorted(self.root.glob(f"{self.BEST_PREFIX}*"))

    @property
    def best_meta(self) -> Path:
        return self.best / self.BEST_META

    def progress(self) -> dict[str, Any]:
        """progress.json, or {} before the first save (or when a kill cut it)."""
        return _object(read_json(self.progress_file))

    def result(self) -> dict[str, Any]:
        return _object(read_json(self.result_file))

    def finished(self) -> bool:
        return self.result().get("status") == "finished"

    def __repr__(self) -> str:
        return f"MemberFolder({str(self.root)!r})"


class TrialFolder(MemberFolder):
    """A sweep trial: a member, plus the trial's own config, its claim and how it ended."""

    trial_config = property(lambda self: self.root / "trial_config.yaml")
    claim = property(lambda self: self.root / "claim.json")
    end = property(lambda self: self.root / "trial.json")


class EnsembleFolder:
    """``RUN/ensemble/``: the ensemble evaluation's outputs.

    The evaluation writes them into a staging folder by these names first, so
    the names are class attributes as well as paths.
    """

    LOG = "ensemble_eval.log"
    REPORT_JSON = "report.json"
    REPORT_MD = "report.md"
    PREDICTIONS = "predictions.npz"
    PREDICTIONS_CSV = "predictions.csv"
    CONFUSION_PNG = "confusion_matrix.png"
    CURVES_PNG = "training_curves.png"
    RELIABILITY_PNG = "reliability.png"
    RISK_COVERAGE_PNG = "risk_coverage.png"
    RESOURCES_JSON = "resources.json"
    # Every output of the evaluation; report.json last, so that it always describes a complete set.
    OUTPUTS = (
        PREDICTIONS,
        PREDICTIONS_CSV,
        RELIABILITY_PNG,
        RISK_COVERAGE_PNG,
        CONFUSION_PNG,
        CURVES_PNG,
        RESOURCES_JSON,
        REPORT_MD,
        REPORT_JSON,
    )

    def __init__(self, root: Path):
        self.root = Path(root)

    log = property(lambda self: self.root / self.LOG)
    report_json = property(lambda self: self.root / self.REPORT_JSON)
    report_md = property(lambda self: self.root / self.REPORT_MD)
    predictions = property(lambda self: self.root / self.PREDICTIONS)
    resources_json = property(lambda self: self.root / self.RESOURCES_JSON)


class RunFolder:
    """One run of ``jobs.launch``: its config, launch record, members, ensemble and job logs."""

    MEMBERS_DIR = "members"
    LAUNCH_SEEDS_KEY = "seeds"

    def __init__(self, root: Path):
        self.root = Path(root).absolute()

    config = property(lambda self: self.root / CONFIG_FILE)
    launch_file = property(lambda self: self.root / "launch.json")
    members_dir = property(lambda self: self.root / self.MEMBERS_DIR)
    logs = property(lambda self: self.root / LOGS_DIR)
    lock = property(lambda self: self.root / LOCK_FILE)
    ensemble = property(lambda self: EnsembleFolder(self.root / "ensemble"))

    member_configs_dir = property(lambda self: self.root / "member_configs")
    from_sweep_file = property(lambda self: self.root / "from_sweep.json")

    def member(self, seed: int) -> MemberFolder:
        return MemberFolder(self.members_dir / f"seed_{seed}")

    def member_config(self, seed: int) -> Path:
        """Member ``seed``'s own config file, written only where a run's members differ."""
        return self.member_configs_dir / f"seed_{seed}.yaml"

    def config_for(self, seed: int) -> Path:
        """The config member ``seed`` trains with: its own where it has one, else the run's."""
        own = self.member_config(seed)
        return own if own.exists() else self.config

    def launch(self) -> dict[str, Any]:
        return _object(read_json(self.launch_file))

    def write_launch(self, record: dict[str, Any]) -> None:
        """Write the new launch record, keeping earlier launches under ``previous``."""
        old = self.launch()
        if old and old.get("launch_id") != record.get("launch_id"):
            record["previous"] = old.pop("previous", []) + [old]
        elif old:
            record["previous"] = old.get("previous", [])
        write_json_atomically(self.launch_file, record)

    def seeds(self) -> list[int] | None:
        """The members' seeds, in launch order: from launch.json, else from the member folders.

        None when the folder is neither; a launch.json without a list of int seeds
        is a ConfigError naming the file.
        """
        if self.launch_file.exists():
            seeds = self.launch().get(self.LAUNCH_SEEDS_KEY)
            if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
                raise ConfigError(
                    f"{self.launch_file}: expected a JSON object with a list of int {self.LAUNCH_SEEDS_KEY!r}"
                )
            return list(dict.fromkeys(seeds))
        if not self.members_dir.is_dir():
            return None
        return sorted(
            int(m.group(1)) for p in self.members_dir.iterdir() if p.is_dir() and (m := _SEED_FOLDER.match(p.name))
        )

    def task_files(self, job_id: str) -> Path:
        return self.logs / job_id

    def task_log(self, job_id: str, stream: str = "err") -> Path:
        return self.task_files(job_id) / f"{job_id}_0_log.{stream}"

    def task_outcome(self, job_id: str) -> Path:
        return self.task_files(job_id) / f"{job_id}_0{TASK_OUTCOME_SUFFIX}"


class GpuCheckFolder:
    """``jobs.gpu_check --out DIR``: a handful of files, so that all of them come back from a lent machine."""

    def __init__(self, root: Path):
        self.root = Path(root)

    result = property(lambda self: self.root / "gpu_check.json")
    summary = property(lambda self: self.root / "summary.md")
    log = property(lambda self: self.root / "gpu_check.log")
    cuda_tests = property(lambda self: self.root / "cuda-tests.xml")
    bench = property(lambda self: self.root / "bench-cuda.json")


class SweepFolder:
    """One sweep folder (``jobs.sweep``): its paths, and its settings and base config read and written."""

    SCHEDULE_LOCK = ".schedule"

    def __init__(self, root: Path):
        self.root = Path(root).absolute()

    settings_file = property(lambda self: self.root / "sweep.json")
    base_config = property(lambda self: self.root / "base_config.yaml")
    journal = property(lambda self: self.root / "study.journal")
    launches = property(lambda self: self.root / "launches.jsonl")
    trials_dir = property(lambda self: self.root / "trials")
    schedule_lock = property(lambda self: self.trials_dir / self.SCHEDULE_LOCK)
    trials_csv = property(lambda self: self.root / "trials.csv")
    top10 = property(lambda self: self.root / "trials_top10.md")
    best_config = property(lambda self: self.root / "best_config.yaml")
    best_member = property(lambda self: self.root / "best_member")
    logs = property(lambda self: self.root / LOGS_DIR)

    def trial(self, number: int) -> TrialFolder:
        return TrialFolder(self.trials_dir / f"trial_{number}")

    def trial_numbers(self) -> list[int]:
        """The numbers of the trials that have a folder, ascending."""
        if not self.trials_dir.is_dir():
            return []
        return sorted(
            int(m.group(1)) for p in self.trials_dir.iterdir() if p.is_dir() and (m := _TRIAL_FOLDER.match(p.name))
        )

    def exists(self) -> bool:
        return self.settings_file.is_file()

    def settings(self) -> "SweepSettings":
        """What ``sweep.json`` holds; a ConfigError when the folder has none."""
        from videns.sweep.settings import SweepSettings  # at call time: videns.sweep imports this module

        try:
            raw = json.loads(self.settings_file.read_text())
        except OSError:
            raise ConfigError(f"{self.root} is not a sweep run folder (no {self.settings_file.name})") from None
        return SweepSettings.from_json(raw)

    def write_settings(self, settings: "SweepSettings") -> None:
        write_json_atomically(self.settings_file, settings.to_json())

    def base_resolved(self) -> dict[str, Any]:
        """The member config every trial starts from, resolved."""
        return yaml.safe_load(self.base_config.read_text())


def library_ensemble_folder(first_library_dir: Path) -> EnsembleFolder:
    """Where a library ensemble goes unless told otherwise: inside the first run or sweep folder of its library."""
    return EnsembleFolder(Path(first_library_dir).absolute() / LIBRARY_ENSEMBLE_DIR)


def task_outcome_beside(result_pickle: Path) -> Path:
    """A task's outcome JSON, beside submitit's ``<job>_<task>_result.pkl``."""
    return result_pickle.with_name(result_pickle.name.replace("_result.pkl", TASK_OUTCOME_SUFFIX))


def bench_logs(out_file: Path) -> Path:
    """Where a submitted bench keeps its job files: beside its JSON output."""
    return Path(out_file).parent / BENCH_LOGS_DIR


def predict_logs(out_file: Path) -> Path:
    """Where a submitted prediction keeps its job files: beside its CSV."""
    return Path(out_file).parent / PREDICT_LOGS_DIR


# ---------------------------------------------------------------- private folders
#
# submitit keeps pickles in RUN/logs/ and the job unpickles and runs them as the
# user who launched it; RUN/config.yaml names classes that are imported. Anyone
# who can write into a run, member, sweep or trial folder can therefore run code
# as its owner: we create them 0700, and refuse trees others could write into.

PRIVATE_MODE = 0o700
PRIVATE_UMASK = 0o077


class SharedFolderError(ConfigError):
    """A folder we would use (and run code from) can be written by other users."""


def use_private_umask() -> None:
    """Everything this process creates from now on (ours and submitit's files) is readable by its owner only."""
    os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> Path:
    """Create ``path`` with mode 0700 (missing parents get the default mode); an existing folder is left as is."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_MODE)  # mkdir's mode is masked by the umask: ask for exactly 0700
    return path


def check_private(root: Path, allow_shared_group: bool = False) -> None:
    """Refuse ``root`` when it, or anything under it, is another user's or writable by group or world.

    ``allow_shared_group`` accepts group-writable entries, with a warning: for a
    group whose members you trust. Symlinks are skipped (their own mode means
    nothing); what they point to inside the tree is checked where it lies.
    """
    root = Path(root)
    if not root.exists():
        return
    warned = False
    for path in _tree(root):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        problem = _sharing_problem(info, allow_shared_group)
        if problem:
            fix = (
                "choose another folder (or have its owner hand it over)"
                if "owned by" in problem
                else f"chmod -R go-w {root}"
                + (
                    ""
                    if allow_shared_group or info.st_mode & stat.S_IWOTH
                    else ", or pass --allow_shared_group true if you trust the group"
                )
            )
            raise SharedFolderError(
                f"{path}: {problem}; whoever can write there can run code as you through the "
                f"job files of {root}; fix: {fix}"
            )
        if allow_shared_group and info.st_mode & stat.S_IWGRP and not warned:
            log.warning(
                "%s is group-writable; trusted because of --allow_shared_group: members of group %d can "
                "run code as you through its job files",
                path,
                info.st_gid,
            )
            warned = True


def _tree(root: Path):
    yield root
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            yield Path(folder) / name


def _sharing_problem(info: os.stat_result, allow_shared_group: bool) -> str | None:
    if info.st_uid != os.getuid():
        return f"owned by {_user_name(info.st_uid)} (uid {info.st_uid}), not by you (uid {os.getuid()})"
    if info.st_mode & stat.S_IWOTH:
        return "writable by every user"
    if info.st_mode & stat.S_IWGRP and not allow_shared_group:
        return f"writable by its group (gid {info.st_gid})"
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "another user"


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
