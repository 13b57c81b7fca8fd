"""One ``jobs.sweep`` command line, resolved: the sweep file's recipe beneath the member options, the site
profile beneath ``--slurm.*``, and what to do."""

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from slurm.cluster import Cluster, site_defaults
from videns.cli import parse_with_resolved_defaults, read_deciding_options
from videns.config import (
    MEMBER_KEYS,
    give_the_model_its_own_defaults,
    keep_demo_data_to_its_folder,
    member_defaults_from,
    member_namespace,
)
from videns.errors import ConfigError
from videns.sweep.spec import Objective, PrunerName, SamplerName, load_sweep_file


@dataclass
class SweepRequest:
    """One ``jobs.sweep`` call, parsed: the sweep file, member overrides and what to do."""

    run_dir: Path
    config: Path | None = None
    search: str | None = None
    trials: int | None = None
    array: int = 1
    cluster: Cluster = "auto"
    sampler: SamplerName | None = None
    pruner: PrunerName | None = None
    objective: Objective | None = None
    dry_run: bool = False
    print_config: bool = False
    wait: bool = False
    mode: Literal["sweep", "worker", "export"] = "sweep"
    member: Namespace = field(default_factory=Namespace)  # the member options: the recipe's, with the overrides
    member_overrides: bool = False  # whether the command line gave member options
    command: str = ""

    @property
    def allow_shared_group(self) -> bool:
        return bool(self.member.get("allow_shared_group"))


DECIDING = ("config", "search", "site")  # read before the parse proper


def sweep_defaults(decided: argparse.Namespace, base: Namespace) -> None:
    """The site profile under --slurm.*, and the sweep file's recipe under the member options."""
    site_defaults(decided, base)
    recipe = _recipe(decided)
    if recipe is not None:
        for key, value in vars(member_defaults_from(recipe)).items():
            if key in base:
                base[key] = value


def _recipe(decided: argparse.Namespace) -> Path | None:
    return load_sweep_file(Path(decided.config[-1]), decided.search).recipe if decided.config else None


def parse_request(parser: ArgumentParser, argv: list[str], prog: str) -> tuple[SweepRequest, Namespace]:
    """(the request, the namespace with --slurm.*)."""
    ns = parse_with_resolved_defaults(parser, argv, DECIDING, sweep_defaults)
    if ns.array < 1:
        raise ConfigError(f"--array must be >= 1, got {ns.array}")
    if ns.worker and ns.export:
        raise ConfigError("--worker and --export exclude each other")
    keep_demo_data_to_its_folder(ns, argv)
    recipe = _recipe(read_deciding_options(parser, argv, DECIDING))
    beneath = member_defaults_from(recipe) if recipe is not None else member_namespace(parser.get_defaults())
    give_the_model_its_own_defaults(parser, ns, argv, beneath.model.class_path)
    mode = "worker" if ns.worker else "export" if ns.export else "sweep"
    request = SweepRequest(
        run_dir=ns.run_dir,
        config=ns.config,
        search=ns.search,
        trials=ns.trials,
        array=ns.array,
        cluster=ns.cluster,
        sampler=ns.sampler,
        pruner=ns.pruner,
        objective=ns.objective,
        dry_run=ns.dry_run,
        print_config=ns.print_config,
        wait=ns.wait,
        mode=mode,
        member=member_namespace(ns),
        member_overrides=_member_overrides(ns, beneath),
        command=shlex.join(["python", "-m", prog, *argv]),
    )
    return request, ns


def _member_overrides(ns: Namespace, beneath: Namespace) -> bool:
    """Whether the command line changed a member option of the recipe (or of the defaults, without one)."""
    return any(ns[key] != beneath[key] for key in MEMBER_KEYS if key in ns and key in beneath)
