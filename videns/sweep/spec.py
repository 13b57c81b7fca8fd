"""A sweep file: which member recipe the trials start from, what to search and how.

    recipe: ecg_cnn1d_gru.yaml        # member config; relative to this file
    objective: accuracy               # or balanced_accuracy (dataset-level macro recall), on val
    sampler: tpe                      # or random
    pruner: median                    # or halving (successive halving, like ASHA), or none
    pruner_args: {median: {n_warmup_steps: 3}, halving: {reduction_factor: 4}}
    seed: 0                           # sampler seed
    space: {model.init_args.gru_hidden: {type: categorical, choices: [64, 128]}, ...}
    conditional: {model.class_path: {videns.models.FCNClassifier: {...}, ...}}   # optional: keys
                                      # drawn only under one choice (see videns.sweep.space)

A file may hold several named searches instead, each with its own ``recipe`` and
``space`` (top-level keys are their defaults); ``--search NAME`` picks one::

    searches:
      cnn1d_gru: {recipe: ecg_cnn1d_gru.yaml, space: {...}}
      cnn2d: {recipe: ecg_cnn2d.yaml, space: {...}}

Every problem is one ConfigError line naming the file and the key.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from videns.errors import ConfigError
from videns.sweep.space import (
    Conditional,
    Space,
    conditional_as_written,
    conditional_from_json,
    conditional_to_json,
    parse_conditional,
    parse_space,
    searched_keys,
    space_as_written,
    space_from_json,
    space_to_json,
)

Objective = Literal["accuracy", "balanced_accuracy"]
SamplerName = Literal["tpe", "random"]
PrunerName = Literal["median", "halving", "none"]
SEARCH_KEYS = {"recipe", "space", "conditional", "objective", "sampler", "pruner", "pruner_args", "seed"}
FILE_KEYS = SEARCH_KEYS | {"searches"}


@dataclass
class SweepSpec:
    """What one study searches.

    Args:
        recipe: member config (YAML) every trial starts from.
        space: dotted member-config key -> distribution.
        objective: validation metric to maximize: accuracy, or balanced_accuracy
            (dataset-level macro recall). Never measured on the test split.
        sampler: tpe (Bayesian, like Ray Tune's HyperOptSearch) or random.
        pruner: median, halving (successive halving, like Ray Tune's ASHA) or none.
        pruner_args: keyword arguments per pruner name, passed to optuna's pruner.
        seed: sampler seed; each worker adds its own offset.
        search: name of the search inside a multi-search file ("" for a single one).
        conditional: keys drawn only under one choice of a categorical key of ``space``.
    """

    recipe: Path
    space: Space
    objective: Objective = "accuracy"
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "median"
    pruner_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    search: str = ""
    conditional: Conditional = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Every key a trial may draw, conditional ones included."""
        return searched_keys(self.space, self.conditional)

    def to_json(self) -> dict[str, Any]:
        written = {
            "recipe": str(self.recipe),
            "space": space_to_json(self.space),
            "objective": self.objective,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "pruner_args": self.pruner_args,
            "seed": self.seed,
            "search": self.search,
        }
        return written | ({"conditional": conditional_to_json(self.conditional)} if self.conditional else {})

    def as_sweep_file(self) -> dict[str, Any]:
        """This one search as a single-search sweep file, which :func:`load_sweep_file` reads back as it."""
        written = {
            "recipe": str(self.recipe),
            "objective": self.objective,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "pruner_args": self.pruner_args,
            "seed": self.seed,
            "space": space_as_written(self.space),
        }
        return written | ({"conditional": conditional_as_written(self.conditional)} if self.conditional else {})

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "SweepSpec":
        return cls(
            **{
                **raw,
                "recipe": Path(raw["recipe"]),
                "space": space_from_json(raw["space"]),
                "conditional": conditional_from_json(raw.get("conditional", {})),
            }
        )


def load_sweep_file(path: Path, search: str | None = None) -> SweepSpec:
    """Read and check a sweep file; ``search`` picks one of its ``searches``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the sweep file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with recipe and space (or searches), got {raw!r}")
    _reject_unknown(raw, FILE_KEYS, f"{path}")
    defaults = {k: v for k, v in raw.items() if k != "searches"}
    if "searches" not in raw:
        if search:
            raise ConfigError(f"{path}: --search {search} given, but the file has no searches")
        return _build(defaults, path, f"{path}", "")
    searches = raw["searches"]
    if not isinstance(searches, dict) or not searches:
        raise ConfigError(f"{path}: searches must map names to {{recipe, space}}, got {searches!r}")
    if "space" in defaults:
        raise ConfigError(f"{path}: give space inside each search, not next to searches")
    if search is None:
        if len(searches) > 1:
            raise ConfigError(f"{path}: holds several searches ({', '.join(searches)}); pick one with --search NAME")
        search = next(iter(searches))
    if search not in searches:
        raise ConfigError(f"{path}: no search {search!r} (known: {', '.join(searches)})")
    entry = searches[search]
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: searches.{search} must be a mapping with recipe and space, got {entry!r}")
    _reject_unknown(entry, SEARCH_KEYS, f"{path}: searches.{search}")
    return _build({**defaults, **entry}, path, f"{path}: searches.{search}", search)


def _build(raw: dict[str, Any], path: Path, where: str, search: str) -> SweepSpec:
    prefix = f"{where}." if ": " in where else f"{where}: "
    for key in ("recipe", "space"):
        if key not in raw:
            raise ConfigError(f"{prefix}{key} is missing")
    recipe = raw["recipe"]
    if not isinstance(recipe, str) or not recipe:
        raise ConfigError(f"{prefix}recipe must be the path of a member config, got {recipe!r}")
    recipe_path = (path.parent / recipe) if not Path(recipe).is_absolute() else Path(recipe)
    if not recipe_path.is_file():
        raise ConfigError(f"{prefix}recipe: no such file {recipe_path}")
    for key, allowed in (("objective", Objective), ("sampler", SamplerName), ("pruner", PrunerName)):
        if key in raw and raw[key] not in get_args(allowed):
            raise ConfigError(f"{prefix}{key} must be one of {', '.join(get_args(allowed))}, got {raw[key]!r}")
    pruner_args = raw.get("pruner_args", {}) or {}
    if not isinstance(pruner_args, dict) or any(
        k not in get_args(PrunerName) or not isinstance(v, dict) for k, v in pruner_args.items()
    ):
        raise ConfigError(
            f"{prefix}pruner_args must map a pruner name (median, halving) to its keyword "
            f"arguments, got {pruner_args!r}"
        )
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{prefix}seed must be an integer, got {seed!r}")
    space = parse_space(raw["space"], f"{prefix}space")
    conditional = parse_conditional(raw.get("conditional"), space, f"{prefix}conditional")
    return SweepSpec(
        recipe=recipe_path.resolve(),
        space=space,
        objective=raw.get("objective", "accuracy"),
        sampler=raw.get("sampler", "tpe"),
        pruner=raw.get("pruner", "median"),
        pruner_args=pruner_args,
        seed=seed,
        search=search,
        conditional=conditional,
    )


def _reject_unknown(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
