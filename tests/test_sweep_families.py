"""A search across model families: conditional keys drawn only under their family, each trial a valid member."""

import json
from pathlib import Path

import optuna
import pytest
import yaml

from videns.config import build_parser, member_config_from_namespace, model_defaults, parse_member_config
from videns.errors import ConfigError
from videns.sweep.prepare import base_resolved
from videns.sweep.space import apply_params, suggest_all
from videns.sweep.spec import SweepSpec, load_sweep_file

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "configs" / "sweep_timeseries.yaml"
FAMILY = "model.class_path"


def branch_keys(spec: SweepSpec) -> dict[str, set[str]]:
    return {choice: set(branch) for choice, branch in spec.conditional[FAMILY].items()}


def test_each_trial_draws_its_own_familys_keys_only_and_makes_a_valid_member(tmp_path):
    spec = load_sweep_file(SWEEP)
    base = base_resolved(parse_member_config(["--config", str(spec.recipe), "--data.root", str(tmp_path)]))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    parser = build_parser(exit_on_error=False)
    drawn_families = set()
    for _ in range(24):
        trial = study.ask()
        params = suggest_all(trial, spec.space, spec.conditional)
        family = params[FAMILY]
        drawn_families.add(family)
        others = set().union(*(keys for choice, keys in branch_keys(spec).items() if choice != family))
        own = branch_keys(spec).get(family, set())
        assert own <= set(params) and not (others - own) & set(params), (family, params)
        member = member_config_from_namespace(parser, parser.parse_object(apply_params(base, params)))
        assert member.model_spec["class_path"] == family
        for key in own:  # the drawn value reached the member's model
            assert member.model_spec["init_args"][key.rpartition(".")[2]] == params[key]
        study.tell(trial, 0.5)
    assert drawn_families == set(spec.space[FAMILY].choices)


def test_another_family_starts_from_its_own_defaults_not_the_recipes_arguments():
    base = {"model": {"class_path": "videns.models.FCNClassifier", "init_args": {"channels": [8, 8, 8]}}}
    switched = apply_params(base, {FAMILY: "videns.models.InceptionTimeClassifier", "model.init_args.depth": 3})
    assert switched["model"]["class_path"] == "videns.models.InceptionTimeClassifier"
    assert switched["model"]["init_args"] == {**model_defaults("videns.models.InceptionTimeClassifier"), "depth": 3}
    assert "channels" not in switched["model"]["init_args"]
    kept = apply_params(base, {FAMILY: "videns.models.FCNClassifier", "model.init_args.dropout": 0.1})
    assert kept["model"]["init_args"] == {"channels": [8, 8, 8], "dropout": 0.1}


def test_the_search_survives_json_and_its_printed_sweep_file(tmp_path):
    spec = load_sweep_file(SWEEP)
    assert SweepSpec.from_json(json.loads(json.dumps(spec.to_json()))).to_json() == spec.to_json()
    printed = tmp_path / "printed.yaml"
    printed.write_text(yaml.safe_dump(spec.as_sweep_file()))
    again = load_sweep_file(printed)
    assert again.to_json() == spec.to_json()


def write_sweep(tmp_path: Path, conditional) -> Path:
    path = tmp_path / "sweep.yaml"
    raw = yaml.safe_load(SWEEP.read_text())
    raw["recipe"] = str(REPO / "configs" / raw["recipe"])
    raw["conditional"] = conditional
    path.write_text(yaml.safe_dump(raw))
    return path


INCEPTION = "videns.models.InceptionTimeClassifier"
TEMPORAL = "videns.models.TemporalAttentionClassifier"


@pytest.mark.parametrize(
    "conditional, words",
    [
        (
            {"optimizer.lr": {0.001: {"model.init_args.depth": {"type": "int", "low": 1, "high": 2}}}},
            "conditional.optimizer.lr: must be a categorical key of space",
        ),
        (
            {FAMILY: {"videns.models.Nope": {"model.init_args.depth": {"type": "int", "low": 1, "high": 2}}}},
            "'videns.models.Nope' is not one of its choices",
        ),
        (
            {FAMILY: {INCEPTION: {"model.init_args.dropout": {"type": "float", "low": 0.0, "high": 0.1}}}},
            "is drawn for every trial already",
        ),
        (
            {
                FAMILY: {
                    INCEPTION: {"model.init_args.filters": {"type": "categorical", "choices": [8, 16]}},
                    TEMPORAL: {"model.init_args.filters": {"type": "categorical", "choices": [8, 32]}},
                }
            },
            "needs one distribution",
        ),
        (
            {FAMILY: {INCEPTION: {"model.init_args.depth": {"type": "int", "low": 5, "high": 2}}}},
            "low (5) must not exceed high (2)",
        ),
    ],
)
def test_a_bad_conditional_space_is_one_line_naming_file_and_key(tmp_path, conditional, words):
    path = write_sweep(tmp_path, conditional)
    with pytest.raises(ConfigError) as err:
        load_sweep_file(path)
    message = str(err.value)
    assert str(path) in message and words in message and "\n" not in message


def test_a_conditional_value_no_member_can_take_is_refused_before_any_trial(tmp_path):
    from videns.sweep.prepare import check_space

    conditional = {
        FAMILY: {
            TEMPORAL: {
                "model.init_args.hidden_dim": {"type": "categorical", "choices": [30]},
                "model.init_args.num_attention_heads": {"type": "categorical", "choices": [8]},
            }
        }
    }
    spec = load_sweep_file(write_sweep(tmp_path, conditional))
    base = base_resolved(parse_member_config(["--config", str(spec.recipe), "--data.root", str(tmp_path)]))
    with pytest.raises(ConfigError, match="num_attention_heads=8 must divide the attention width 60"):
        check_space(base, spec, "sweep.yaml")
