"""Search spaces: dotted member-config keys mapped to optuna distributions.

A space in YAML::

    space:
      model.init_args.gru_hidden: {type: categorical, choices: [32, 64, 128, 256, 512]}
      model.init_args.num_blocks: {type: int, low: 1, high: 5}
      schedule.plateau_factor:    {type: float, low: 0.1, high: 0.4}
      optimizer.lr:               {type: float, low: 1.0e-4, high: 1.0e-2, log: true}

Each key is a member setting as ``jobs.train`` spells it (``--model.init_args.gru_hidden``);
the sampled value replaces it in the trial's config. The optuna parameter name is the
key itself, so ``trial.params`` *are* the config overrides.
"""

import copy
from typing import Any

from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json, json_to_distribution)

from videns.errors import ConfigError

Space = dict[str, BaseDistribution]
SCALAR_TYPES = (bool, int, float, str, type(None))
FIELDS = {
    "categorical": {"type", "choices"},
    "int": {"type", "low", "high", "step", "log"},
    "float": {"type", "low", "high", "step", "log"},
}


def parse_space(raw: Any, where: str) -> Space:
    """``{dotted key: {type: ..., ...}}`` -> optuna distributions; ``where`` prefixes every error."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: must be a non-empty mapping of member-config keys "
                          f"(e.g. model.init_args.gru_hidden) to distributions, got {raw!r}")
    space = {}
    for key, spec in raw.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{where}: {key!r} is not a dotted member-config key")
        space[key] = parse_distribution(spec, f"{where}.{key}")
    return space


def parse_distribution(spec: Any, where: str) -> BaseDistribution:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping like {{type: int, low: 1, high: 5}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in FIELDS:
        raise ConfigError(f"{where}: type must be one of {', '.join(FIELDS)}, got {kind!r}")
    unknown = sorted(set(spec) - FIELDS[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for type {kind} "
                          f"(allowed: {', '.join(sorted(FIELDS[kind]))})")
    if kind == "categorical":
        return _categorical(spec, where)
    return _numeric(spec, kind, where)


def _categorical(spec: dict, where: str) -> CategoricalDistribution:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
    bad = [c for c in choices if not isinstance(c, SCALAR_TYPES)]
    if bad:
        raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}")
    if len({(type(c), c) for c in choices}) != len(choices):
        raise ConfigError(f"{where}: choices repeat a value: {choices}")
    return CategoricalDistribution(choices)


def _numeric(spec: dict, kind: str, where: str) -> BaseDistribution:
    number = int if kind == "int" else (int, float)
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number):
            raise ConfigError(f"{where}: {name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) must not exceed high ({high})")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    if log and step is not None and step != 1:
        raise ConfigError(f"{where}: step and log cannot be combined")
    if kind == "int":
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=step)


def space_as_written(space: Space) -> dict[str, dict[str, Any]]:
    """What a sweep file says for ``space``: :func:`parse_space` of it gives ``space`` back."""
    written = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            written[key] = {"type": "categorical", "choices": list(d.choices)}
            continue
        entry = {"type": "int" if isinstance(d, IntDistribution) else "float", "low": d.low, "high": d.high}
        if d.log:
            entry["log"] = True
        if d.step is not None and not (isinstance(d, IntDistribution) and d.step == 1):
            entry["step"] = d.step
        written[key] = entry
    return written


def suggest_all(trial, space: Space) -> dict[str, Any]:
    """Suggest every key of ``space`` through the trial's public API; a key already set keeps its value.

    So a trial resumed after a crash between ``ask`` and the last suggestion gets the missing params
    now, and one resumed later gets back exactly the params it had.
    """
    params = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            params[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            params[key] = trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
    return params


def representative_values(distribution: BaseDistribution) -> list[Any]:
    """Values that exercise a distribution's range: every choice, or both ends."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def apply_params(tree: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the nested config ``tree`` with each dotted key of ``params`` set."""
    tree = copy.deepcopy(tree)
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = tree
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parents[:i + 1])} is a value, not a group of settings")
        node[leaf] = value
    return tree


def space_to_json(space: Space) -> dict[str, str]:
    return {key: distribution_to_json(d) for key, d in space.items()}


def space_from_json(raw: dict[str, str]) -> Space:
    return {key: json_to_distribution(d) for key, d in raw.items()}
