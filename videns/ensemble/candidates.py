"""A library's pool: every finished model of some run folders and sweep folders, each with a readable name.

A run contributes each member that is done (:mod:`videns.member.state`, as a run's
ensemble judges it); a sweep each trial that ended COMPLETE (its ``trial.json``:
not pruned, not failed, not still running). Either must have a usable best
checkpoint. The rest are skipped with a reason. A candidate is named
``<folder name>/<its folder>``: ``runA/seed_42``, ``sweep3/trial_7``.

What a candidate *is* comes from the config saved with its best checkpoint: its
model family, the settings that set it apart in the pool, and which candidates
share a config apart from the seed.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from videns.config import HASH_EXCLUDED
from videns.ensemble import members as found
from videns.errors import ConfigError
from videns.folders import RunFolder, SweepFolder, TrialFolder
from videns.io import read_json

SourceKind = Literal["run", "sweep"]
CandidateKind = Literal["member", "trial"]
COMPLETE = "COMPLETE"  # optuna's state of a trial that finished and was told its value
# Keys that say where or how fast a model trained, not what it is (the epochs it trained for are what it is).
WHERE_KEYS = tuple(k for k in HASH_EXCLUDED if k != "trainer.max_epochs")
SEED_KEY = "seed"


@dataclass(frozen=True)
class Source:
    """One folder of the library."""

    root: Path
    kind: SourceKind
    prefix: str  # what its candidates' names start with


@dataclass
class SkippedCandidate:
    name: str
    reason: str


@dataclass
class Pool:
    """The usable candidates (named members), the skipped ones, and where each came from."""

    sources: list[Source]
    members: list[found.Member] = field(default_factory=list)
    skipped: list[SkippedCandidate] = field(default_factory=list)
    where: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name: how to find it again


def find_pool(dirs: list[Path]) -> Pool:
    """Every candidate of every folder, in the order given (a run's seeds in launch order, trials by number)."""
    pool = Pool(sources=sources(dirs))
    for source in pool.sources:
        for where in _locations(source):
            name = f"{source.prefix}/{Path(where['folder']).name}"
            try:
                pool.members.append(load_candidate(where, name))
                pool.where[name] = where
            except found.SkipMember as skip:
                pool.skipped.append(SkippedCandidate(name, str(skip)))
    return pool


def sources(dirs: list[Path]) -> list[Source]:
    """Each folder once, as a run or a sweep, with a name prefix no other folder of the library shares."""
    roots = list(dict.fromkeys(Path(d).absolute() for d in dirs))
    kinds = [_source_kind(root) for root in roots]
    return [Source(root, kind, prefix) for root, kind, prefix in zip(roots, kinds, _prefixes(roots))]


def _source_kind(root: Path) -> SourceKind:
    if SweepFolder(root).exists():
        return "sweep"
    if RunFolder(root).seeds() is not None:
        return "run"
    raise ConfigError(
        f"library {root}: neither a run folder (launch.json or members/) nor a sweep folder "
        f"({SweepFolder(root).settings_file.name})"
    )


def _prefixes(roots: list[Path]) -> list[str]:
    """The folders' names; where two share a name, as many parent folders as tell them apart."""
    depth = 1
    while True:
        names = ["/".join(root.parts[-depth:]) for root in roots]
        if len(set(names)) == len(names) or depth >= max(len(r.parts) for r in roots):
            return names
        depth += 1


def _locations(source: Source) -> list[dict[str, Any]]:
    """What identifies each candidate of ``source`` on disk, as the report records it."""
    if source.kind == "run":
        run = RunFolder(source.root)
        return [
            {"kind": "member", "source": str(source.root), "seed": seed, "folder": str(run.member(seed).root)}
            for seed in run.seeds()
        ]
    sweep = SweepFolder(source.root)
    return [
        {"kind": "trial", "source": str(source.root), "trial": n, "folder": str(sweep.trial(n).root)}
        for n in sweep.trial_numbers()
    ]


def load_candidate(where: dict[str, Any], name: str) -> found.Member:
    """The candidate recorded by ``where``, if it is (still) finished; raises SkipMember with the reason."""
    if where["kind"] == "member":
        member = found.load_member(Path(where["source"]), int(where["seed"]))
        member.name = name
        return member
    trial = SweepFolder(Path(where["source"])).trial(int(where["trial"]))
    _check_trial_complete(trial)
    return found.load_best_model(trial, name)


def _check_trial_complete(trial: TrialFolder) -> None:
    end = read_json(trial.end)
    state = end.get("state") if isinstance(end, dict) else None
    if state is None:
        raise found.SkipMember(f"not finished: no {trial.end.name} (still running, or stopped before the end)")
    if state != COMPLETE:
        note = end.get("note")
        raise found.SkipMember(f"{state}{': ' + note if note else ''}")
    if not trial.finished():
        raise found.SkipMember(f"its {trial.result_file.name} does not say finished")


def config_without_seed(member: found.Member) -> str:
    """What a model is apart from its seed, as one string: its saved config without the seed and without keys
    that say where or how fast it trained. Candidates with equal strings form a seed ensemble."""
    settings = flat_config(member)
    if not settings:  # a checkpoint without its config is like no other
        return f"no config: {member.name}"
    return json.dumps({k: v for k, v in settings.items() if k != SEED_KEY}, sort_keys=True)


def flat_config(member: found.Member) -> dict[str, Any]:
    """The config saved with its best checkpoint as dotted keys, without where-and-how-fast keys."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif not any(prefix == k or prefix.startswith(k + ".") for k in WHERE_KEYS):
            flat[prefix] = node

    walk(member.meta.get("config") or {}, "")
    return flat


def varying_settings(members: list[found.Member]) -> list[dict[str, Any]]:
    """Per candidate, the settings that differ somewhere in the pool (the seed among them): what sets it apart."""
    flats = [flat_config(m) for m in members]
    keys = sorted({k for flat in flats for k in flat})
    varying = [k for k in keys if len({json.dumps(flat.get(k), sort_keys=True) for flat in flats}) > 1]
    return [{k: flat.get(k) for k in varying} for flat in flats]


def family(member: found.Member) -> str:
    return str((member.meta.get("model") or {}).get("class_path", "unknown"))
