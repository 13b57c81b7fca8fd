"""Find an ensemble's members on disk and rebuild each one from its own best checkpoint.

The expected members are the run folder's seeds (:meth:`videns.folders.RunFolder.seeds`). A member
that is missing, not done (:mod:`videns.member.state`: unfinished, failed or stale) or unreadable is
*skipped* with a reason; members
that cannot be averaged with the others (class mapping, feature dim) are a
:class:`CheckpointError`, because averaging them would be silently wrong.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from videns.errors import CheckpointError, ConfigError, DataError
from videns.folders import MemberFolder, RunFolder
from videns.io import read_jsonl
from videns.member.checkpoint import load_best
from videns.member.state import DONE, member_state, run_expects
from videns.models.base import SequenceClassifier
from videns.models.class_path import build_model

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One usable member: its model (on CPU, in eval mode) and what its checkpoint says about it."""

    seed: int
    folder: MemberFolder
    model: SequenceClassifier
    meta: dict[str, Any]
    restarts: int
    weights_sha256: str
    name: str = ""  # a library's candidate name (``<dir name>/seed_42``); empty for a run's member

    @property
    def label(self) -> str:
        """How messages name it: ``member seed 42``, or ``candidate runA/trial_7``."""
        return f"candidate {self.name}" if self.name else f"member seed {self.seed}"

    @property
    def short_label(self) -> str:
        """How tables and plots name it: ``seed 42``, or ``runA/trial_7``."""
        return self.name or f"seed {self.seed}"

    @property
    def best_epoch(self) -> int:
        return int(self.meta["epoch"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["data"]["class_names"])

    @property
    def feature_dim(self) -> int:
        return int(self.meta["data"]["feature_dim"])

    @property
    def data_root(self) -> Path | None:
        root = (self.meta.get("config") or {}).get("data", {}).get("root")
        return Path(root) if root else None


@dataclass
class Skipped:
    """A member left out of the ensemble, and why."""

    seed: int
    reason: str


@dataclass
class MemberSet:
    """The outcome of looking for the members: who is usable, who was skipped."""

    expected: list[int]
    members: list[Member] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def expected_seeds(run_dir: Path) -> list[int]:
    """The run's seeds, in the launcher's (or ascending) order."""
    seeds = RunFolder(run_dir).seeds()
    if seeds is None:
        raise ConfigError(f"{run_dir}: not a run folder (neither launch.json nor members/ exists)")
    return seeds


def select_seeds(expected: list[int], wanted: Sequence[int] | None, run_dir: Path) -> list[int]:
    """``wanted`` (``--members``) as a subset of ``expected``; an unknown seed is a user error."""
    if wanted is None:
        return expected
    unknown = [s for s in wanted if s not in expected]
    if unknown:
        raise ConfigError(f"--members: seed(s) {unknown} are not members of {run_dir} (members: {expected})")
    return list(dict.fromkeys(wanted))


def load_members(run_dir: Path, seeds: Sequence[int]) -> MemberSet:
    """Load every listed member that finished and has a valid best checkpoint; skip the rest with a reason."""
    found = MemberSet(expected=list(seeds))
    for seed in seeds:
        try:
            found.members.append(load_member(run_dir, seed))
        except SkipMember as skip:
            log.warning("skipping member seed %d: %s", seed, skip)
            found.skipped.append(Skipped(seed, str(skip)))
    check_members_agree(found.members)
    return found


class SkipMember(Exception):
    """This member cannot take part; the message says why."""


def load_member(run_dir: Path, seed: int) -> Member:
    run = RunFolder(run_dir)
    folder = run.member(seed)
    if not folder.root.is_dir():
        raise SkipMember(f"missing: no folder {folder.root}")
    state = member_state(run, seed, run_expects(run, seed))  # done only if it finished what the run asked for
    if state.state != DONE:
        raise SkipMember(f"{state.state}: {state.reason or 'no finished ' + folder.result_file.name}")
    member = load_best_model(folder)
    if member.meta.get("seed") != seed:
        raise SkipMember(f"its best checkpoint belongs to seed {member.meta.get('seed')}, not {seed}")
    return member


def load_best_model(folder: MemberFolder, name: str = "") -> Member:
    """The folder's best model, rebuilt from the spec saved with it; the caller judged the folder finished."""
    try:
        tensors, meta, weights_sha256 = load_best(folder)
    except CheckpointError as err:
        raise SkipMember(f"no usable best checkpoint: {err}") from None
    seed = meta.get("seed")
    return Member(
        seed=seed if isinstance(seed, int) else -1,
        folder=folder,
        model=_rebuild(meta, tensors),
        meta=meta,
        restarts=int(folder.progress().get("restarts", 0)),
        weights_sha256=weights_sha256,
        name=name,
    )


def _rebuild(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SequenceClassifier:
    """The model as it was trained: built from the spec stored *with* the checkpoint, not today's config."""
    data = meta.get("data") or {}
    if "model" not in meta or "feature_dim" not in data or "class_names" not in data:
        raise SkipMember(f"best checkpoint lacks the model spec or data facts (has keys {sorted(meta)})")
    try:
        model = build_model(meta["model"], int(data["feature_dim"]), len(data["class_names"]))
        model.load_state_dict(tensors)
    except (CheckpointError, ConfigError) as err:
        raise SkipMember(f"cannot rebuild the model from its saved spec: {err}") from None
    except RuntimeError as err:  # load_state_dict: keys or shapes that do not fit the spec
        first_line = str(err).strip().splitlines()[0]
        raise SkipMember(f"saved weights do not fit the saved model spec: {first_line}") from None
    return model.eval()


def check_members_agree(members: Sequence[Member]) -> None:
    """Members must share classes (in index order) and feature dim, or their probabilities cannot be averaged."""
    if not members:
        return
    first = members[0]
    for other in members[1:]:
        if other.class_names != first.class_names:
            raise CheckpointError(
                f"{other.label} was trained with classes {list(other.class_names)}, {first.label} "
                f"with {list(first.class_names)}; members of one ensemble must share the class mapping"
            )
        if other.feature_dim != first.feature_dim:
            raise CheckpointError(
                f"{other.label} was trained on feature dim {other.feature_dim}, {first.label} "
                f"on {first.feature_dim}; members of one ensemble must share the feature dim"
            )


def check_test_data_agrees(
    members: Sequence[Member], class_names: Sequence[str], feature_dim: int, test_file: Path
) -> None:
    """The test file must have the members' classes (same names, same indices) and feature dim."""
    first = members[0]
    if tuple(class_names) != first.class_names:
        raise DataError(
            f"{test_file}: class mapping {_mapping(class_names)} disagrees with the members' "
            f"{_mapping(first.class_names)} ({first.label})"
        )
    if feature_dim != first.feature_dim:
        raise DataError(
            f"{test_file}: feature dim {feature_dim} disagrees with the members' {first.feature_dim} ({first.label})"
        )


def _mapping(class_names: Sequence[str]) -> str:
    return json.dumps({name: i for i, name in enumerate(class_names)})


def read_history(folder: MemberFolder) -> list[dict[str, Any]]:
    """A member's per-epoch records; an unreadable line ends the history (a kill can cut the last one)."""
    return read_jsonl(folder.history)
