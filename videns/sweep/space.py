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

A conditional space adds keys that are drawn only under one choice of a categorical key
(optuna's define-by-run), e.g. each model family's own arguments::

    conditional:
      model.class_path:
        videns.models.FCNClassifier:
          model.init_args.dropout: {type: float, low: 0.0, high: 0.3}
        videns.models.InceptionTimeClassifier:
          model.init_args.depth: {type: int, low: 3, high: 6}

A key may appear under several choices only with the same distribution, since optuna keeps
one distribution per parameter name. Choosing another ``model.class_path`` than the base
config's starts that model from its own defaults, not from the base model's arguments.
"""

import copy
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from videns.errors import ConfigError

Space = dict[str, BaseDistribution]
# parent key -> one of its choices -> the keys drawn only under that choice
Conditional = dict[str, dict[Any, Space]]
MODEL_CLASS_KEY = "model.class_path"
SCALAR_TYPES = (bool, int, float, str, type(None))
FIELDS = {
    "categorical": {"type", "choices"},
    "int": {"type", "low", "high", "step", "log"},
    "float": {"type", "low", "high", "step", "log"},
}


def parse_space(raw: Any, where: str) -> Space:
    """``{dotted key: {type: ..., ...}}`` -> optuna distributions; ``where`` prefixes every error."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{where}: must be a non-empty mapping of member-config keys "
            f"(e.g. model.init_args.gru_hidden) to distributions, got {raw!r}"
        )
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
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)} for type {kind} "
            f"(allowed: {', '.join(sorted(FIELDS[kind]))})"
        )
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


def parse_conditional(raw: Any, space: Space, where: str) -> Conditional:
    """``{parent key: {choice: space}}`` -> Conditional, checked against the unconditional ``space``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must map a categorical key of space to {{choice: space}}, got {raw!r}")
    conditional: Conditional = {}
    drawn: dict[str, tuple[BaseDistribution, str]] = {}
    for parent, branches in raw.items():
        parent_distribution = space.get(parent)
        if not isinstance(parent_distribution, CategoricalDistribution):
            raise ConfigError(f"{where}.{parent}: must be a categorical key of space")
        if not isinstance(branches, dict) or not branches:
            raise ConfigError(f"{where}.{parent}: must map choices of {parent} to spaces, got {branches!r}")
        conditional[parent] = {}
        for choice, branch in branches.items():
            if choice not in parent_distribution.choices:
                raise ConfigError(
                    f"{where}.{parent}: {choice!r} is not one of its choices "
                    f"({', '.join(map(str, parent_distribution.choices))})"
                )
            branch_space = parse_space(branch, f"{where}.{parent}.{choice}")
            for key, distribution in branch_space.items():
                _check_branch_key(key, distribution, space, drawn, f"{where}.{parent}.{choice}")
                drawn[key] = (distribution, f"{parent}.{choice}")
            conditional[parent][choice] = branch_space
    return conditional


def _check_branch_key(
    key: str, distribution: BaseDistribution, space: Space, drawn: dict[str, tuple[BaseDistribution, str]], where: str
) -> None:
    if key in space:
        raise ConfigError(f"{where}.{key}: is drawn for every trial already (in space); drop one of the two")
    if key in drawn and drawn[key][0] != distribution:
        raise ConfigError(
            f"{where}.{key}: differs from its distribution under {drawn[key][1]}; a key drawn "
            f"under several choices needs one distribution (optuna keeps one per name)"
        )


def searched_keys(space: Space, conditional: Conditional) -> list[str]:
    """Every key a trial may draw: the space's, then each conditional key once, in file order."""
    keys = list(space)
    for branches in conditional.values():
        for branch in branches.values():
            keys += [key for key in branch if key not in keys]
    return keys


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


def conditional_as_written(conditional: Conditional) -> dict[str, dict[Any, dict[str, dict[str, Any]]]]:
    return {
        parent: {choice: space_as_written(branch) for choice, branch in branches.items()}
        for parent, branches in conditional.items()
    }


def suggest_all(trial, space: Space, conditional: Conditional | None = None) -> dict[str, Any]:
    """Suggest every key of ``space``, then the conditional keys of the choices drawn, through the trial's
    public API; a key already set keeps its value.

    So a trial resumed after a crash between ``ask`` and the last suggestion gets the missing params
    now, and one resumed later gets back exactly the params it had.
    """
    params = _suggest(trial, space)
    for parent, branches in (conditional or {}).items():
        params |= _suggest(trial, branches.get(params[parent], {}))
    return params


def _suggest(trial, space: Space) -> dict[str, Any]:
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
    """A copy of the nested config ``tree`` with each dotted key of ``params`` set.

    A ``model.class_path`` other than the tree's replaces the tree's ``model.init_args``, another
    model's arguments, with the new model's own defaults, written out: left out, the config parser
    would carry over the ones the two models share.
    """
    tree = copy.deepcopy(tree)
    model = tree.get("model")
    if MODEL_CLASS_KEY in params and isinstance(model, dict) and model.get("class_path") != params[MODEL_CLASS_KEY]:
        from videns.config import model_defaults

        model["init_args"] = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in model_defaults(params[MODEL_CLASS_KEY]).items()
        }
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = tree
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(parents[: i + 1])} is a value, not a group of settings")
        node[leaf] = value
    return tree


def space_to_json(space: Space) -> dict[str, str]:
    return {key: distribution_to_json(d) for key, d in space.items()}


def space_from_json(raw: dict[str, str]) -> Space:
    return {key: json_to_distribution(d) for key, d in raw.items()}


def conditional_to_json(conditional: Conditional) -> dict[str, list[list[Any]]]:
    """Choices become list entries, not object keys, so a number or boolean choice keeps its type."""
    return {
        parent: [[choice, space_to_json(branch)] for choice, branch in branches.items()]
        for parent, branches in conditional.items()
    }


def conditional_from_json(raw: dict[str, list[list[Any]]]) -> Conditional:
    return {
        parent: {choice: space_from_json(branch) for choice, branch in branches} for parent, branches in raw.items()
    }
