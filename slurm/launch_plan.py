"""From ``jobs.launch``'s command line to a checked plan. Nothing is written here.

One parser: the launcher's own options, the ``--slurm.*`` group and the member's
options (so ``--trainer.max_epochs 20`` and ``--config`` work as for
``jobs.train``). Two defaults depend on other flags and are resolved between the
two steps of :func:`videns.cli.parse_with_resolved_defaults`: the site profile
(``--site``, else $VIDENS_SITE) under ``--slurm.*``, and, without ``--config``,
the run folder's own config on relaunch (else configs/ensemble.yaml) under the
member options. What the command line gives always wins.
"""

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from slurm.cluster import Cluster, ClusterConfig, add_cluster_arguments, cluster_config, code_root, site_defaults
from slurm.from_sweep import SweepSelection, select_members
from slurm.queue import query_run_jobs
from videns.cli import (
    flag_given,
    is_true,
    parse_strictly,
    parse_with_resolved_defaults,
    read_deciding_options,
    strict_parser,
)
from videns.config import (
    DEFAULT_MODEL,
    DEFAULT_OUT_DIR,
    HASH_EXCLUDED,
    MemberConfig,
    add_member_arguments,
    build_parser,
    dump_config,
    give_the_model_its_own_defaults,
    keep_demo_data_to_its_folder,
    member_config_from_namespace,
    member_defaults_from,
    run_member_config,
)
from videns.data import layout
from videns.ensemble.combine import Combination
from videns.ensemble.conformal import DEFAULT_COVERAGE, coverage_problem
from videns.errors import ConfigError, DataError, LockHeld
from videns.folders import RunFolder, check_private, make_private
from videns.locks import FolderLock, describe_holder, holder_of
from videns.member.train import has_finished

DEFAULT_CONFIG = code_root() / "configs" / "ensemble.yaml"
DEFAULT_MEMBERS = 4
RESULTS_DIR = Path("results")
LAUNCH_KEYS = (
    "array",
    "cluster",
    "run_dir",
    "site",
    "slurm",
    "dry_run",
    "force",
    "wait",
    "tta",
    "combine",
    "coverage",
    "mondrian",
    "from_sweep",
    "top_k",
    "seeds",
)
DECIDING = ("config", "run_dir", "from_sweep", "site", "allow_shared_group")  # read before the parse proper
MEMBER_HEADING = (
    "Member options, as for jobs.train (--seed is the base seed: member i trains seed --seed + i; "
    "each member's folder is RUN/members/seed_<seed>)"
)


@dataclass
class LaunchPlan:
    """A checked launch: the run folder, the member config to save, the seeds and how to run them."""

    run: RunFolder
    member: MemberConfig  # seed = the base seed; each task has its own seed and out_dir
    seeds: list[int]  # every member of the run, finished or not
    to_train: list[int]  # the members that still need a task (finished ones take no queue slot)
    cluster: Cluster
    slurm: ClusterConfig
    generate_demo: bool
    dry_run: bool = False
    force: bool = False
    wait: bool = False
    tta: bool = False
    combine: Combination = "mean"
    coverage: float = DEFAULT_COVERAGE
    mondrian: bool = False
    lock: FolderLock | None = None  # held from the checks to the launch's last write; None for a dry run
    # --from_sweep: each member's own config, and which sweep trial each one retrains
    member_configs: dict[int, MemberConfig] = field(default_factory=dict)
    selection: SweepSelection | None = None

    def config_of(self, seed: int) -> MemberConfig:
        """The config member ``seed`` trains: its own (--from_sweep), else the run's with its seed."""
        return self.member_configs.get(seed, self.member)


def build_launch_parser() -> ArgumentParser:
    # print_config=None: --print_config is the member's, printed after the model's own defaults are filled in
    parser = strict_parser(
        prog="jobs.launch",
        print_config=None,
        description="Train an ensemble (one SLURM array task per seed) and evaluate it in a "
        "dependent job. Running the same command again continues the run.",
    )
    parser.add_argument(
        "--array",
        type=int | None,
        default=None,
        help=f"Number of members (default {DEFAULT_MEMBERS}, or the run's own count on relaunch).",
    )
    parser.add_argument(
        "--cluster",
        type=Cluster,
        default="auto",
        help="slurm, local (submitit's local executor), or auto: slurm when its controller answers.",
    )
    parser.add_argument(
        "--run_dir",
        type=Path | None,
        default=None,
        help="Run folder (default results/<config file name>); an existing one is continued, "
        "under its own config unless --config is given.",
    )
    parser.add_argument("--dry_run", action="store_true", help="Print the sbatch scripts; write and submit nothing.")
    parser.add_argument(
        "--force", action="store_true", help="Continue a run under a changed config (members resume their checkpoints)."
    )
    parser.add_argument("--wait", action="store_true", help="On SLURM, wait for the ensemble job and print the status.")
    parser.add_argument("--tta", action="store_true", help="Evaluate the ensemble with test-time augmentation.")
    parser.add_argument(
        "--combine",
        type=Combination,
        default="mean",
        help="How the ensemble job combines members, chosen on validation (see jobs.ensemble_eval).",
    )
    parser.add_argument(
        "--coverage",
        type=float,
        default=DEFAULT_COVERAGE,
        help="The ensemble job's prediction sets hold the true class this often (split conformal).",
    )
    parser.add_argument(
        "--mondrian", action="store_true", help="The ensemble job calibrates its prediction sets per class."
    )
    parser.add_argument(
        "--from_sweep",
        type=Path | None,
        default=None,
        help="Retrain the --top_k best trials of this sweep folder with --seeds seeds each, every "
        "member with its trial's exact config; the ensemble job then selects from them "
        "(Caruana, on validation). Not with --config or --array.",
    )
    parser.add_argument(
        "--top_k",
        type=int | None,
        default=None,
        help="With --from_sweep: how many of the sweep's best complete trials (default 3).",
    )
    parser.add_argument(
        "--seeds",
        type=int | None,
        default=None,
        help="With --from_sweep: seeds per trial (default 2); a relaunch with more adds seeds only.",
    )
    add_cluster_arguments(parser)
    add_member_arguments(parser, out_dir=False, title=MEMBER_HEADING)
    return parser


def launch_defaults(decided: argparse.Namespace, base: Namespace) -> None:
    """The defaults that depend on other flags: the site profile, and the member config beneath the command line."""
    site_defaults(decided, base)
    config = default_member_config(decided)
    if config is not None:
        use_member_config(base, config)


def use_member_config(base: Namespace, config: Path) -> None:
    for key, value in vars(member_defaults_from(config)).items():
        if key in base:
            base[key] = value


def default_member_config(decided: argparse.Namespace) -> Path | None:
    """Without --config: the run folder's own config on relaunch, else configs/ensemble.yaml. A run of a
    sweep's trials has none: each member's config comes from its trial (:func:`_trial_member`)."""
    if decided.config:
        return None
    run = RunFolder(Path(decided.run_dir)) if decided.run_dir is not None else None
    if decided.from_sweep is not None or (run is not None and run.from_sweep_file.exists()):
        return None
    if run is not None and run.config.exists():
        # Its config names classes that will be imported: trust the folder first.
        check_private(run.root, is_true(decided.allow_shared_group))
        return run.config
    if not DEFAULT_CONFIG.exists():
        raise ConfigError(f"no --config given and the default {DEFAULT_CONFIG} does not exist")
    return DEFAULT_CONFIG


def plan_launch(args: list[str]) -> LaunchPlan:
    if flag_given(args, "--out_dir"):
        raise ConfigError(
            "--out_dir is jobs.train's: jobs.launch puts member seed N in RUN/members/seed_N; "
            "choose the run folder with --run_dir"
        )
    parser = build_launch_parser()
    ns = parse_with_resolved_defaults(parser, args, DECIDING, launch_defaults)
    decided = read_deciding_options(parser, args, DECIDING)
    keep_demo_data_to_its_folder(ns, args)
    give_the_model_its_own_defaults(parser, ns, args, _model_beneath(decided))
    opts = {key: ns.pop(key) for key in LAUNCH_KEYS}
    opts["slurm"] = cluster_config(Namespace(slurm=opts["slurm"]))
    if ns.print_config:
        print(dump_config(_member_config(ns, DEFAULT_OUT_DIR)), end="")
        raise SystemExit(0)
    if opts["array"] is not None and opts["array"] < 1:
        raise ConfigError(f"--array must be >= 1, got {opts['array']}")
    if coverage_problem(opts["coverage"], "--coverage"):
        raise ConfigError(coverage_problem(opts["coverage"], "--coverage"))
    run = RunFolder(opts["run_dir"] or _default_run_dir(decided, opts))
    created = _first_missing(run.root)
    lock = None if opts["dry_run"] else lock_run_folder(run, ns.allow_shared_group)
    try:
        return _checked_plan(run, ns, opts, ParsedLaunch(parser, args, decided), lock)
    except BaseException:
        if lock is not None:
            lock.release()
            if created is not None:  # a refused launch leaves no folder behind
                run.lock.unlink(missing_ok=True)
                _remove_empty_up_to(run.root, created)
        raise


@dataclass
class ParsedLaunch:
    """The command line and its parser: a sweep's trials are parsed again, each on top of its own config."""

    parser: ArgumentParser
    args: list[str]
    decided: argparse.Namespace  # the DECIDING options


def _model_beneath(decided: argparse.Namespace) -> str:
    """The model class beneath the command line: its default config's, or the parser default's."""
    config = default_member_config(decided)
    return member_defaults_from(config).model.class_path if config is not None else DEFAULT_MODEL["class_path"]


def _member_config(ns: Namespace, out_dir: Path) -> MemberConfig:
    """The member config of a launch namespace (its launch keys taken out), with ``out_dir``."""
    ns.out_dir = out_dir
    return member_config_from_namespace(build_parser(), ns)


def _default_run_dir(decided: argparse.Namespace, opts: dict[str, Any]) -> Path:
    if opts["from_sweep"] is not None:
        return RESULTS_DIR / f"{Path(opts['from_sweep']).name}_top"
    config = Path(decided.config[-1]) if decided.config else DEFAULT_CONFIG
    return RESULTS_DIR / config.stem


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _remove_empty_up_to(path: Path, top: Path) -> None:
    for folder in (path, *path.parents):
        folder.rmdir()
        if folder == top:
            return


def lock_run_folder(run: RunFolder, allow_shared_group: bool) -> FolderLock:
    """The run folder's lock, taken before anything in it is read for a decision; a second launcher refuses."""
    if run.root.exists():
        check_private(run.root, allow_shared_group)
    make_private(run.root)
    lock = FolderLock(run.lock, "run folder")
    lock.acquire()
    return lock


def _checked_plan(
    run: RunFolder, ns: Namespace, opts: dict[str, Any], parsed: ParsedLaunch, lock: FolderLock | None
) -> LaunchPlan:
    if opts["from_sweep"] is not None or run.from_sweep_file.exists() or opts["top_k"] or opts["seeds"]:
        return _checked_sweep_plan(run, ns, opts, parsed, lock)
    existing = run.seeds() if run.root.is_dir() else None
    if existing and not flag_given(parsed.args, "--seed"):
        ns.seed = existing[0]  # a relaunch keeps the run's own base seed
    count = opts["array"] or len(existing or []) or DEFAULT_MEMBERS
    seeds = [ns.seed + i for i in range(count)]
    ns.data.root = Path(ns.data.root).absolute()  # tasks may start in another working directory
    if opts["force"]:
        ns.checkpoint.force = True
    member = _member_config(ns, run.member(ns.seed).root)
    generate_demo = check_data(member)
    check_relaunch(run, member, opts["force"])
    to_train = [seed for seed in seeds if not has_finished(run.member(seed), member)]
    return LaunchPlan(
        run=run,
        member=member,
        seeds=seeds,
        to_train=to_train,
        cluster=opts["cluster"],
        slurm=opts["slurm"],
        generate_demo=generate_demo,
        dry_run=opts["dry_run"],
        force=opts["force"],
        wait=opts["wait"],
        tta=opts["tta"],
        combine=opts["combine"],
        coverage=opts["coverage"],
        mondrian=opts["mondrian"],
        lock=lock,
    )


def _checked_sweep_plan(
    run: RunFolder, ns: Namespace, opts: dict[str, Any], parsed: ParsedLaunch, lock: FolderLock | None
) -> LaunchPlan:
    """--from_sweep: every member its trial's config, with the command line's member options on top."""
    if parsed.decided.config:
        raise ConfigError("--from_sweep trains each trial's own config; leave out --config")
    if opts["array"] is not None:
        raise ConfigError("--from_sweep sets the members by --top_k and --seeds; leave out --array")
    if run.config.exists() and not run.from_sweep_file.exists():
        raise ConfigError(
            f"--run_dir {run.root} is a run of one config, not of a sweep's trials; choose another --run_dir"
        )
    selection = select_members(run, opts["from_sweep"], opts["top_k"], opts["seeds"], ns.seed)
    configs = {
        seed: _trial_member(run, selection.trial_configs[trial], seed, parsed, opts["force"])
        for seed, trial in selection.members.items()
    }
    seeds = list(selection.members)
    member = configs[seeds[0]]
    generate_demo = check_data(member)
    check_sweep_relaunch(run, configs, opts["force"])
    to_train = [seed for seed in seeds if not has_finished(run.member(seed), configs[seed])]
    return LaunchPlan(
        run=run,
        member=member,
        seeds=seeds,
        to_train=to_train,
        cluster=opts["cluster"],
        slurm=opts["slurm"],
        generate_demo=generate_demo,
        dry_run=opts["dry_run"],
        force=opts["force"],
        wait=opts["wait"],
        tta=opts["tta"],
        combine="greedy",
        coverage=opts["coverage"],
        mondrian=opts["mondrian"],
        lock=lock,
        member_configs=configs,
        selection=selection,
    )


def _trial_member(run: RunFolder, trial_config: Path, seed: int, parsed: ParsedLaunch, force: bool) -> MemberConfig:
    """A trial's exact config with the launch's member options on top, as member ``seed`` of ``run``."""
    base = parsed.parser.get_defaults()
    use_member_config(base, trial_config)
    ns = parse_strictly(parsed.parser, parsed.args, namespace=base)
    give_the_model_its_own_defaults(parsed.parser, ns, parsed.args, beneath=base.model.class_path)
    for key in LAUNCH_KEYS:
        ns.pop(key)
    ns.seed = seed
    ns.data.root = Path(ns.data.root).absolute()
    if force:
        ns.checkpoint.force = True
    return _member_config(ns, run.member(seed).root)


def check_sweep_relaunch(run: RunFolder, configs: dict[int, MemberConfig], force: bool) -> None:
    """Members already planned keep their configs, unless --force; nothing of the run may still run."""
    if not run.from_sweep_file.exists():
        return
    check_private(run.root, next(iter(configs.values())).allow_shared_group)
    check_nothing_running(run)
    for seed, cfg in configs.items():
        if not run.member_config(seed).exists():
            continue
        saved = run_member_config(run.member_config(seed), seed, cfg.out_dir)
        if saved.config_hash != cfg.config_hash and not force:
            changes = "; ".join(config_changes(saved.resolved, cfg.resolved)) or "seed or model"
            raise ConfigError(
                f"{run.root}: member seed {seed} was started with another config ({changes}); "
                f"relaunch with the same options, pass --force to continue under the new ones, "
                "or choose another --run_dir"
            )


def check_data(cfg: MemberConfig) -> bool:
    """True when demo data must be generated first; a DataError when the data is missing."""
    root = Path(cfg.data.root)
    missing = [layout.split_path(root, s).name for s in layout.SPLITS if not layout.split_path(root, s).exists()]
    if not missing:
        return False
    if cfg.data.generate_demo and len(missing) == len(layout.SPLITS):
        return True
    raise DataError(
        f"data.root {root} lacks {', '.join(missing)}: put the feature files there or pass "
        "--data.root DIR; to try the suite on generated demo data instead: "
        "python -m jobs.launch --array 4 --config configs/demo.yaml (add --data.generate_demo true "
        "to write the demo data into another --data.root)"
    )


def check_relaunch(run: RunFolder, cfg: MemberConfig, force: bool) -> None:
    """An existing run folder is continued only under the same config, and only when nothing of it still runs."""
    if not run.root.exists():
        return
    check_private(run.root, cfg.allow_shared_group)
    if not run.config.exists():
        if any(p.name != run.lock.name for p in run.root.iterdir()):
            raise ConfigError(
                f"--run_dir {run.root} exists but is not a run folder (no {run.config.name}); choose another --run_dir"
            )
        return
    check_nothing_running(run)
    saved = run_member_config(run.config, cfg.seed, cfg.out_dir)
    if saved.config_hash != cfg.config_hash and not force:
        changes = "; ".join(config_changes(saved.resolved, cfg.resolved)) or "seed or model"
        raise ConfigError(
            f"{run.root} was started with another config ({changes}): relaunch it with its own "
            f"settings (--run_dir {run.root} alone reuses them), pass --force to continue it under "
            "the new ones, or choose another --run_dir"
        )


def check_nothing_running(run: RunFolder) -> None:
    """Refuse while a job of the run's last launch is queued or running, or a process trains one of its members.

    A SLURM controller that does not answer refuses too (``ControllerSilent``):
    a job it cannot tell about may still be training.
    """
    launch = run.launch()
    if launch.get("cluster") == "slurm":
        ids = [str(i) for i in (*launch.get("member_job_ids", {}).values(), launch.get("ensemble_job_id")) if i]
        jobs = query_run_jobs(ids)
        active = [i for i in ids if i in jobs and jobs[i].active]
        if active:
            raise ConfigError(
                f"{run.root}: job(s) {', '.join(active)} of its last launch are still queued or "
                f"running; wait for them (python -m jobs.status --run_dir {run.root}) or scancel "
                "them, then relaunch"
            )
    for seed in launch.get("seeds", []):
        member = run.member(seed)
        if holder_of(member.lock) is not None:
            raise LockHeld(
                f"{member.root}: still being trained by {describe_holder(member.lock)}; "
                "wait for it to end, or stop it first"
            )


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every hashed setting that differs."""
    a, b = _flatten(old), _flatten(new)
    excluded = tuple(HASH_EXCLUDED)
    keys = [
        k
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and not any(k == e or k.startswith(e + ".") for e in excluded)
    ]
    return [f"{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}" for k in keys]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
