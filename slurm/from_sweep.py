"""``jobs.launch --from_sweep SWEEP --top_k K --seeds S``: the K best configs of a sweep, S seeds each, as one run.

Each member trains its trial's exact config (saved as RUN/member_configs/seed_<N>.yaml)
with its own seed. The trials are fixed at the first launch and recorded in
RUN/from_sweep.json with each member's trial: a relaunch with a larger ``--seeds``
adds seeds to the same trials, whatever the sweep has finished since.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videns.errors import ConfigError
from videns.folders import RunFolder
from videns.io import read_json
from videns.sweep.top import best_trials

DEFAULT_TOP_K = 3
DEFAULT_SEEDS = 2


@dataclass
class SweepSelection:
    """The trials a run retrains, and which trial each of its members trains."""

    sweep: Path
    trials: list[int]  # best first
    trial_configs: dict[int, Path]
    seeds_per_trial: int
    members: dict[int, int]  # seed -> trial number, in launch order

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": str(self.sweep),
            "trials": self.trials,
            "seeds_per_trial": self.seeds_per_trial,
            "members": {str(seed): trial for seed, trial in self.members.items()},
        }


def recorded_selection(run: RunFolder) -> dict[str, Any] | None:
    """The run's from_sweep.json, or None for a run that was not launched from a sweep."""
    raw = read_json(run.from_sweep_file)
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("members"), dict) or not isinstance(raw.get("trials"), list):
        raise ConfigError(f"{run.from_sweep_file}: expected an object with trials and members")
    return raw


def select_members(
    run: RunFolder, sweep: Path | None, top_k: int | None, seeds: int | None, base_seed: int
) -> SweepSelection:
    """The run's members: the recorded ones, grown to ``seeds`` per trial; or, at the first launch, the
    ``top_k`` best trials of ``sweep`` with ``seeds`` each, numbered from ``base_seed``."""
    recorded = recorded_selection(run)
    if recorded is None:
        if sweep is None:
            raise ConfigError("--top_k and --seeds need --from_sweep SWEEP")
        return _first_selection(Path(sweep).absolute(), top_k or DEFAULT_TOP_K, seeds or DEFAULT_SEEDS, base_seed)
    return _grown_selection(run, recorded, sweep, top_k, seeds)


def _first_selection(sweep: Path, top_k: int, seeds: int, base_seed: int) -> SweepSelection:
    _check_counts(top_k, seeds)
    trials = best_trials(sweep, top_k)
    members = {base_seed + rank * seeds + i: trial.number for rank, trial in enumerate(trials) for i in range(seeds)}
    return SweepSelection(sweep, [t.number for t in trials], {t.number: t.config for t in trials}, seeds, members)


def _grown_selection(
    run: RunFolder, recorded: dict[str, Any], sweep: Path | None, top_k: int | None, seeds: int | None
) -> SweepSelection:
    recorded_sweep = Path(recorded["sweep"])
    trials = [int(t) for t in recorded["trials"]]
    if sweep is not None and Path(sweep).absolute() != recorded_sweep:
        raise ConfigError(
            f"{run.root} retrains trials of {recorded_sweep}, not of {Path(sweep).absolute()}; choose another --run_dir"
        )
    if top_k is not None and top_k != len(trials):
        raise ConfigError(
            f"{run.root} retrains the top {len(trials)} trials ({trials}); --top_k {top_k} would "
            "change them: a run grows by seeds only (choose another --run_dir for other trials)"
        )
    old_seeds = int(recorded.get("seeds_per_trial", 1))
    wanted = old_seeds if seeds is None else seeds
    _check_counts(len(trials), wanted)
    if wanted < old_seeds:
        raise ConfigError(f"{run.root} has {old_seeds} seeds per trial; --seeds {wanted} would drop members")
    members = {int(seed): int(trial) for seed, trial in recorded["members"].items()}
    next_seed = max(members) + 1
    for trial in trials:
        for _ in range(wanted - sum(1 for t in members.values() if t == trial)):
            members[next_seed] = trial
            next_seed += 1
    ordered = dict(sorted(members.items(), key=lambda item: (trials.index(item[1]), item[0])))
    configs = {t: _trial_config(recorded_sweep, t) for t in trials}
    return SweepSelection(recorded_sweep, trials, configs, wanted, ordered)


def _trial_config(sweep: Path, number: int) -> Path:
    from videns.folders import SweepFolder

    path = SweepFolder(sweep).trial(number).trial_config
    if not path.is_file():
        raise ConfigError(f"{path}: the config of trial {number}, which this run retrains, is missing")
    return path


def _check_counts(top_k: int, seeds: int) -> None:
    if top_k < 1:
        raise ConfigError(f"--top_k must be >= 1, got {top_k}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
