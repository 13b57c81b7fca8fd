"""A member's whole configuration: one jsonargparse parser over typed component configs.

``python -m jobs.train --print_config`` prints a complete YAML that runs when fed
back with ``--config``. Values are type-checked while parsing; rules that span
fields are checked when the component configs are built, before any work.
"""

import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import ActionYesNo, ArgumentParser, Namespace

from videns.checkpoint.policy import CheckpointConfig
from videns.cli import flag_given, parse_strictly, strict_parser
from videns.data.config import DataConfig
from videns.errors import ConfigError
from videns.models.base import SequenceClassifier
from videns.models.class_path import model_class_of
from videns.training.config import TrainerConfig
from videns.training.loss import LossConfig
from videns.training.optim import OptimizerConfig, ScheduleConfig

DEFAULT_MODEL = {"class_path": "videns.models.TemporalAttentionClassifier", "init_args": {}}
# Keys that change where or how fast a member runs, not what it computes: a
# checkpoint stays valid when only these differ.
HASH_EXCLUDED = (
    "config",
    "print_config",
    "out_dir",
    "allow_shared_group",
    "checkpoint",
    "data.root",
    "data.generate_demo",
    "data.num_workers",
    "data.preload_gb",
    "data.check_finite",
    "trainer.max_epochs",
    "trainer.progress",
    "trainer.monitor_minutes",
    "trainer.tensorboard",
    "trainer.device",
    "trainer.gpu_memory_gb",
    "trainer.eval_batch_size",
)

DEFAULT_OUT_DIR = Path("results/member")

# What sets one member apart from the others of its run.
MEMBER_OWN_KEYS = ("seed", "out_dir")

ModelFactory = Callable[[int, int], SequenceClassifier]


@dataclass
class MemberConfig:
    """Everything one ensemble member needs, built and checked."""

    seed: int
    out_dir: Path
    allow_shared_group: bool
    data: DataConfig
    model: ModelFactory
    model_spec: dict[str, Any]
    loss: LossConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    trainer: TrainerConfig
    checkpoint: CheckpointConfig
    resolved: dict[str, Any]

    @property
    def config_hash(self) -> str:
        return config_hash(self.resolved)


def build_parser(**kwargs) -> ArgumentParser:
    # print_config=None: --print_config is ours, printed after the model's own defaults are filled in
    parser = strict_parser(description="Train one ensemble member.", print_config=None, **kwargs)
    add_member_arguments(parser)
    return parser


def add_member_arguments(
    parser: ArgumentParser, *, config: bool = True, out_dir: bool = True, title: str | None = None
) -> None:
    """A member's options on ``parser``: its own ``--config``/``--print_config`` (unless ``config`` is False, for
    a command whose ``--config`` is another file), ``--seed``, ``--out_dir`` (unless the command places members
    itself), ``--model`` and the component groups. With ``title``, the top-level ones go under that heading."""
    group = parser.add_argument_group(title) if title else parser
    if config:
        group.add_argument("--config", action="config", help="YAML config file (start one with --print_config).")
        group.add_argument(
            "--print_config",
            action=ActionYesNo,
            default=False,
            help="Print the complete config as YAML (loadable with --config) and exit.",
        )
    group.add_argument(
        "--seed", type=int, default=42, help="Member seed: model init, data order, augmentation, dropout."
    )
    if out_dir:
        group.add_argument("--out_dir", type=Path, default=DEFAULT_OUT_DIR, help="Member folder.")
    group.add_argument(
        "--allow_shared_group",
        type=bool,
        default=False,
        help="Use an existing member or run folder that its group may write into (with a warning); "
        "never one that is another user's or world-writable.",
    )
    group.add_argument(
        "--model",
        type=ModelFactory,
        default=Namespace(**DEFAULT_MODEL),
        help="Model class (class_path) and its init_args; feature_dim and num_classes come from the data.",
    )
    parser.add_class_arguments(DataConfig, "data")
    parser.add_class_arguments(LossConfig, "loss")
    parser.add_class_arguments(OptimizerConfig, "optimizer")
    parser.add_class_arguments(ScheduleConfig, "schedule")
    parser.add_class_arguments(TrainerConfig, "trainer")
    parser.add_class_arguments(CheckpointConfig, "checkpoint")


MEMBER_KEYS = (
    "seed",
    "out_dir",
    "allow_shared_group",
    "model",
    "data",
    "loss",
    "optimizer",
    "schedule",
    "trainer",
    "checkpoint",
)


def member_namespace(ns: Namespace) -> Namespace:
    """The member's keys of a namespace parsed by a parser with :func:`add_member_arguments` and more."""
    return Namespace(**{key: ns[key] for key in MEMBER_KEYS if key in ns})


def member_defaults_from(config: Path) -> Namespace:
    """The member options a config file gives, on top of the member defaults; a bad file is one ConfigError line."""
    return member_namespace(parse_strictly(build_parser(), ["--config", str(config)]))


def parse_member_config(args: Sequence[str] | None = None, parser: ArgumentParser | None = None) -> MemberConfig:
    """Parse command-line style ``args`` into a built, checked MemberConfig."""
    parser = parser or build_parser()
    args = list(sys.argv[1:] if args is None else args)
    ns = parse_strictly(parser, args)
    keep_demo_data_to_its_folder(ns, args)
    give_the_model_its_own_defaults(parser, ns, args)
    cfg = member_config_from_namespace(parser, ns)
    if ns.print_config:
        print(dump_config(cfg), end="")
        raise SystemExit(0)
    return cfg


def give_the_model_its_own_defaults(
    parser: ArgumentParser, ns: Namespace, args: Sequence[str], beneath: str = DEFAULT_MODEL["class_path"]
) -> None:
    """A model class other than the one ``beneath`` (the default model's, or that of the config the command
    line was parsed on top of) takes the arguments given for it and its own defaults for the rest.

    jsonargparse keeps the arguments that a newly given ``class_path`` shares with the one before it
    (by design: omni-us/jsonargparse#460), so ``class_path: FCNClassifier`` alone would train with the
    reference model's dropout 0.4 and no standardisation. What ``args`` give for the chosen class is
    read again, without defaults and with no other class before it.
    """
    chosen = ns.model.class_path
    if chosen == beneath:
        return
    only_chosen = Namespace(model=Namespace(class_path=chosen))
    given = parse_strictly(parser, list(args), defaults=False, namespace=only_chosen).get("model.init_args")
    ns.model.init_args = Namespace(**(model_defaults(chosen) | dict(vars(given or Namespace()))))


def model_defaults(class_path: str) -> dict[str, Any]:
    """The init arguments of the model ``class_path`` names that have defaults, with them."""
    parameters = inspect.signature(model_class_of(class_path).__init__).parameters
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def keep_demo_data_to_its_folder(ns: Namespace, args: Sequence[str]) -> None:
    """A config's ``generate_demo`` writes demo data only into the config's own ``data.root``.

    With another ``--data.root`` on the command line, a mistyped path to real data
    would otherwise become a run on generated data; there, only an explicit
    ``--data.generate_demo true`` writes it.
    """
    if ns.data.generate_demo and flag_given(args, "--data.root") and not flag_given(args, "--data.generate_demo"):
        ns.data.generate_demo = False


def member_config_from_namespace(parser: ArgumentParser, ns: Namespace) -> MemberConfig:
    resolved = ns.clone()
    resolved.pop("config", None)
    resolved.pop("print_config", None)
    resolved_dict = json.loads(parser.dump(resolved, format="json"))
    built = _instantiate(parser, ns)
    check_model_args(built.model)
    return MemberConfig(
        seed=built.seed,
        out_dir=Path(built.out_dir),
        allow_shared_group=built.allow_shared_group,
        data=built.data,
        model=built.model,
        model_spec=resolved_dict["model"],
        loss=built.loss,
        optimizer=built.optimizer,
        schedule=built.schedule,
        trainer=built.trainer,
        checkpoint=built.checkpoint,
        resolved=resolved_dict,
    )


def check_model_args(model: ModelFactory) -> None:
    """Build the model once on the meta device, so its argument checks fail at parse time.

    No memory is allocated, so this costs milliseconds even for the full-size
    model, and a launcher learns of a bad head count before it submits anything.
    """
    import torch

    with torch.device("meta"):
        model(1, 2)


def dump_config(cfg: MemberConfig) -> str:
    """The resolved config as YAML, loadable with ``--config``."""
    import yaml

    return yaml.safe_dump(cfg.resolved, sort_keys=False)


def dump_run_config(cfg: MemberConfig) -> str:
    """The config every member of a run shares: the resolved config without any one member's seed and out_dir."""
    import yaml

    shared = {k: v for k, v in cfg.resolved.items() if k not in MEMBER_OWN_KEYS}
    return yaml.safe_dump(shared, sort_keys=False)


def run_member_config(run_config: Path, seed: int, out_dir: Path) -> MemberConfig:
    """Member ``seed`` of a run: the run's shared config (:func:`dump_run_config`) with its own seed and folder."""
    parser = build_parser()
    ns = parse_strictly(parser, ["--config", str(run_config)])
    ns.seed, ns.out_dir = int(seed), Path(out_dir)
    return member_config_from_namespace(parser, ns)


def config_hash(resolved: dict[str, Any]) -> str:
    """Hash of the settings that determine what a member computes."""
    trimmed = json.loads(json.dumps(resolved))
    for dotted in HASH_EXCLUDED:
        *parents, leaf = dotted.split(".")
        node = trimmed
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(trimmed, sort_keys=True).encode()).hexdigest()[:16]


def _instantiate(parser: ArgumentParser, ns: Namespace) -> Namespace:
    try:
        return parser.instantiate(ns)
    except ConfigError:
        raise
    except Exception as err:  # jsonargparse may wrap a component's ConfigError
        cause = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
