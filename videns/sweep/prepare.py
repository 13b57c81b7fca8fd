"""Setting up (or continuing) a sweep's run folder; every check happens before anything is written."""

import dataclasses
import itertools
import json
import logging
from argparse import ArgumentError
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from videns.config import DEFAULT_OUT_DIR, MemberConfig, build_parser, config_hash, member_config_from_namespace
from videns.data.inspect import check_before_work
from videns.errors import ConfigError
from videns.folders import SweepFolder, make_private
from videns.io import write_text_atomically
from videns.sweep.settings import SweepSettings
from videns.sweep.space import Space, apply_params, representative_values
from videns.sweep.spec import SweepSpec, load_sweep_file
from videns.sweep.study import create_study

log = logging.getLogger(__name__)


def open_sweep(
    folder: SweepFolder,
    sweep_file: Path | None,
    search: str | None,
    choices: dict[str, Any],
    member: Namespace,
    member_overrides: bool,
    trials: int | None,
    write: bool,
    check_data: bool = True,
) -> SweepSettings:
    """The checked sweep of a command line: from a sweep file (a new sweep, or one that must match the
    folder's), or from the folder alone. ``choices`` override the file's sampler/pruner/objective;
    ``member`` holds the member options every trial starts from (the file's recipe, with the command
    line's overrides, such as ``--trainer.max_epochs 20``). Writes only when ``write``; with
    ``check_data``, refuses data that every trial would fail on, before anything is written."""
    if sweep_file is None:
        if member_overrides or not folder.exists():
            why = "with member overrides" if member_overrides else "to start a sweep"
            raise ConfigError(
                f"--config SWEEP_FILE is needed {why} ({folder.root} is "
                f"{'a' if folder.exists() else 'not a'} sweep folder)"
            )
        settings = folder.settings()
        if check_data:
            data = folder.base_resolved()["data"]
            check_before_work(Path(data["root"]), bool(data.get("generate_demo")))
        if write and trials is not None and trials != settings.trials:
            settings.trials = trials
            folder.write_settings(settings)
        return settings
    spec = load_sweep_file(sweep_file, search)
    spec = dataclasses.replace(spec, **{k: v for k, v in choices.items() if v is not None})
    base = member_config_from_namespace(build_parser(), Namespace(out_dir=DEFAULT_OUT_DIR, **vars(member.clone())))
    if check_data:
        check_before_work(Path(base.data.root), base.data.generate_demo)
    if not write:
        check_space(base_resolved(base), spec, str(sweep_file))
        return SweepSettings(spec, trials or 0)
    return prepare_sweep(folder, spec, base, trials, str(sweep_file))


def check_space(base: dict[str, Any], spec: SweepSpec, where: str) -> None:
    """Each choice (or both ends of a range) of each key, set alone in ``base``, must make a valid member;
    so must each pair of them for two keys of one group (``model.init_args``), whose arguments can
    constrain each other: attention heads must divide the LSTM width, whatever hidden size is drawn.

    Building the member config also builds its model (on the meta device), so the models' own
    argument checks run now, not in trial 7.
    """
    parser = build_parser(exit_on_error=False)
    for params in _checked_combinations(spec):
        try:
            tree = apply_params(base, params)
            member_config_from_namespace(parser, parser.parse_object(tree))
        except (ConfigError, ArgumentError, ValueError, TypeError) as err:
            drawn = " with ".join(f"space.{key} = {value!r}" for key, value in params.items())
            raise ConfigError(
                f"{where}: {drawn} does not make a valid member config: {' '.join(str(err).split())}"
            ) from None


def _checked_combinations(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Every representative value alone, then every pair of them across two keys of one group; under each
    conditional choice, the same again for the keys drawn with it, that choice set."""
    yield from _combinations_of(_representatives(spec.space), {})
    for parent, branches in spec.conditional.items():
        for choice, branch in branches.items():
            # A trial under this choice draws every key of the branch: each starts at its first value,
            # as no model's own defaults need fit the others drawn (12 heads with a drawn width of 64).
            drawn = _representatives(branch)
            fixed = {parent: choice} | {key: values[0] for key, values in drawn.items()}
            shared = {key: values for key, values in _representatives(spec.space).items() if key != parent}
            yield from _combinations_of(shared | drawn, fixed)


def _representatives(space: Space) -> dict[str, list[Any]]:
    return {key: representative_values(distribution) for key, distribution in space.items()}


def _combinations_of(values: dict[str, list[Any]], fixed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key, options in values.items():
        for value in options:
            yield fixed | {key: value}
    for first, second in itertools.combinations(values, 2):
        if first.rpartition(".")[0] == second.rpartition(".")[0]:
            for pair in itertools.product(values[first], values[second]):
                yield fixed | dict(zip((first, second), pair))


def base_resolved(base: MemberConfig) -> dict[str, Any]:
    """The base member config as trials start from it: data.root absolute (tasks start anywhere)."""
    resolved = json.loads(json.dumps(base.resolved))
    resolved["data"]["root"] = str(Path(resolved["data"]["root"]).absolute())
    resolved.pop("out_dir", None)
    return resolved


def prepare_sweep(
    folder: SweepFolder,
    spec: SweepSpec,
    base: MemberConfig,
    trials: int | None,
    where: str,
    heartbeat_s: float = 30.0,
    stale_after_s: float = 300.0,
) -> SweepSettings:
    """Write sweep.json, base_config.yaml and the study, or check that an existing sweep matches."""
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    resolved = base_resolved(base)
    check_space(resolved, spec, where)
    if folder.exists():
        return _continue(folder, spec, resolved, trials)
    if folder.root.exists() and any(folder.root.iterdir()):
        raise ConfigError(f"--run_dir {folder.root} exists but is not a sweep run folder; choose another --run_dir")
    if trials is None:
        raise ConfigError("--trials N is needed to start a sweep")
    settings = SweepSettings(spec, trials, heartbeat_s, stale_after_s)
    make_private(folder.root)
    write_text_atomically(folder.base_config, yaml.safe_dump(resolved, sort_keys=False))
    create_study(folder, spec)
    folder.write_settings(settings)  # last: its presence marks a complete run folder
    return settings


def _continue(folder: SweepFolder, spec: SweepSpec, resolved: dict[str, Any], trials: int | None) -> SweepSettings:
    saved = folder.settings()
    if config_hash(folder.base_resolved()) != config_hash(resolved):
        raise ConfigError(
            f"{folder.root} was started from another member config; continue it with "
            f"--run_dir {folder.root} alone, or choose another --run_dir"
        )
    if _search_part(saved.spec) != _search_part(spec):
        raise ConfigError(
            f"{folder.root} was started with another search (space, objective, sampler or pruner); "
            f"continue it with --run_dir {folder.root} alone, or choose another --run_dir"
        )
    if trials is not None and trials != saved.trials:
        log.info("sweep %s: trials %d -> %d", folder.root, saved.trials, trials)
        saved.trials = trials
        folder.write_settings(saved)
    return saved


def _search_part(spec: SweepSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.to_json().items() if k not in ("recipe", "search")}
