"""A sweep's best finished trials, ranked by their validation objective, with the configs they trained."""

from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from videns.errors import ConfigError
from videns.folders import SweepFolder
from videns.sweep.study import load_study


@dataclass(frozen=True)
class RankedTrial:
    """One complete trial: its number, its validation objective and its exact member config."""

    number: int
    value: float
    config: Path


def best_trials(sweep_dir: Path, count: int) -> list[RankedTrial]:
    """The ``count`` complete trials of the sweep in ``sweep_dir`` with the highest value (ties: lower number)."""
    folder = SweepFolder(sweep_dir)
    if not folder.exists():
        raise ConfigError(f"--from_sweep {sweep_dir}: not a sweep folder (no {folder.settings_file.name})")
    study = load_study(folder, folder.settings().spec)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    ranked = sorted(complete, key=lambda t: (-t.value, t.number))
    if len(ranked) < count:
        raise ConfigError(
            f"--from_sweep {sweep_dir}: --top_k {count} asks for more trials than the "
            f"{len(ranked)} complete ones; finish more trials or ask for fewer"
        )
    trials = [RankedTrial(t.number, float(t.value), folder.trial(t.number).trial_config) for t in ranked[:count]]
    missing = [t for t in trials if not t.config.is_file()]
    if missing:
        raise ConfigError(
            f"--from_sweep {sweep_dir}: trial {missing[0].number} is complete but its config "
            f"{missing[0].config} is missing"
        )
    return trials
