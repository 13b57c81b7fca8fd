"""An ensemble selected from a library of trained models: the finished models of several runs and sweeps.

Every candidate runs once over validation and once over test (the passes a run's
ensemble makes, :mod:`videns.ensemble.scoring`). Caruana forward selection with
replacement on validation NLL picks the ensemble (:func:`videns.ensemble.combine.greedy_picks`,
optionally at most ``max_members`` distinct candidates); the temperature and the
prediction sets are fitted on validation as for a run. Test labels only score:
the selected ensemble against the best single candidate (by validation NLL) and
against a seed ensemble of that candidate's config.

The whole pool is checked before anything runs or is written: the same split
files (:mod:`videns.ensemble.split_files`), class mapping and feature dim.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videns.data.inspect import DatasetInfo
from videns.ensemble import members as found
from videns.ensemble import report as rep
from videns.ensemble.candidates import Pool, config_without_seed, family, find_pool, varying_settings
from videns.ensemble.combine import combine, greedy_picks, nll
from videns.ensemble.eval_config import EnsembleEvalConfig
from videns.ensemble.library_report import comparison_statement
from videns.ensemble.outputs import ensemble_writers, publish
from videns.ensemble.resources import merge_resource_logs, run_cost
from videns.ensemble.scoring import SplitPredictions, baselines, check_data, predict_splits, strongest, tta_modes
from videns.ensemble.split_files import FileHasher, SplitFile, check_same_split_files
from videns.ensemble.trust import Chosen, choose_on_validation
from videns.errors import CheckpointError
from videns.member.ledger import read_restarts
from videns.metrics import classification_metrics

log = logging.getLogger(__name__)

COMPARED_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "nll", "ece")


@dataclass
class PreparedLibrary:
    """A pool that passed every check, and the split files it is evaluated on."""

    pool: Pool
    data_root: Path
    files: dict[str, Path]
    info: DatasetInfo
    trained_on: dict[str, SplitFile]  # by split: what every candidate was trained on
    evaluated_on: dict[str, SplitFile]


def prepare_library(cfg: EnsembleEvalConfig) -> PreparedLibrary:
    """Find the pool and check it whole; nothing is evaluated or written here."""
    pool = find_pool(cfg.library)
    if not pool.members:
        reasons = "; ".join(f"{s.name} {s.reason}" for s in pool.skipped) or "no member or trial folders"
        raise CheckpointError(f"library {', '.join(str(s.root) for s in pool.sources)}: no usable candidate: {reasons}")
    hasher = FileHasher()
    trained_on = check_same_split_files(pool.members, hasher)
    found.check_members_agree(pool.members)
    data_root = cfg.data_root or pool.members[0].data_root
    files, info = check_data(pool.members, data_root)
    evaluated_on = {split: hasher.facts(path) for split, path in files.items()}
    return PreparedLibrary(pool, data_root, files, info, trained_on, evaluated_on)


def evaluate_library(cfg: EnsembleEvalConfig, prepared: PreparedLibrary) -> dict[str, Any]:
    """Predict, select on validation, score on test, write the library ensemble's folder; return the report."""
    members, info = prepared.pool.members, prepared.info
    for skipped in prepared.pool.skipped:
        log.warning("library: skipping %s: %s", skipped.name, skipped.reason)
    _warn_if_evaluated_elsewhere(prepared)
    passes = predict_splits(cfg, members, prepared.files, info)
    val, test = passes.val, passes.test
    trust, chosen = choose_on_validation(
        [m.name for m in members], val, test, info.class_names, cfg.combine, cfg.coverage, cfg.mondrian, cfg.max_members
    )
    section = library_section(prepared, passes, chosen, cfg.max_members)
    resources = merge_resource_logs(
        {m.name: m.folder.resources for m in members}, restarts={m.name: read_restarts(m.folder) for m in members}
    )
    report = rep.build_report(
        members=_entries(prepared, passes, trust, section),
        ensemble_probs=chosen.probs,
        labels=test.labels,
        class_names=info.class_names,
        skipped=[],
        context=_context(cfg, prepared, passes, resources),
    )
    picked = [p["name"] for p in section["selection"]["picks"]]
    report["ensemble"].update(combination=cfg.combine, names=picked, num_members=len(picked))
    report["ensemble"].pop("seeds")
    fitted = baselines(prepared.files, info)
    report.update(
        trust,
        num_val_items=len(val.labels),
        baselines=fitted,
        baseline=strongest(fitted),
        library=section,
        skipped=[vars(s) for s in prepared.pool.skipped],
    )
    title = (
        f"Library ensemble of {len(picked)} of {len(members)} candidates{' with TTA' if cfg.tta else ''}: "
        f"accuracy {report['ensemble']['accuracy']:.4f}"
    )
    publish(
        cfg.out_dir, report, ensemble_writers(report, members, val, test, chosen, info.class_names, resources, title)
    )
    return report


def library_section(
    prepared: PreparedLibrary, passes: SplitPredictions, chosen: Chosen, max_members: int | None
) -> dict[str, Any]:
    """The report's ``library``: the pool by validation, the picks and the comparisons on test."""
    members, val = prepared.pool.members, passes.val
    names = [m.name for m in members]
    picks = greedy_picks(val.member_probs, val.labels, max_members=max_members)  # as chosen.weights were made
    counts = np.bincount(picks, minlength=len(members))
    if not np.array_equal(counts > 0, chosen.weights > 0):
        raise RuntimeError(f"the picks {counts.tolist()} disagree with the chosen weights {chosen.weights.tolist()}")
    return {
        "sources": [{"folder": str(s.root), "kind": s.kind, "prefix": s.prefix} for s in prepared.pool.sources],
        "selection": {
            "rule": "Caruana forward selection with replacement on validation NLL; the weights are the pick counts "
            "of the best prefix",
            "max_members": max_members,
            "num_candidates": len(members),
            "num_picks": len(picks),
            "pick_order": [names[i] for i in picks],
            "validation_nll": nll(val.labels, combine(val.member_probs, chosen.weights)),
            "picks": [
                {"name": names[i], "times": int(counts[i]), "weight": float(chosen.weights[i])}
                for i in np.flatnonzero(chosen.weights)
            ],
        },
        "comparisons": comparisons(members, passes, chosen, prepared.info.class_names)
        | {"run_ensembles": run_ensembles(members, prepared.pool.where, passes, chosen, prepared.info.class_names)},
        "data": {
            "trained_on": {s: f.as_dict() for s, f in prepared.trained_on.items()},
            "evaluated_on": {s: f.as_dict() for s, f in prepared.evaluated_on.items()},
        },
    }


def comparisons(
    members: list[found.Member], passes: SplitPredictions, chosen: Chosen, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """On test, all before temperature: the library ensemble, the best single candidate by validation NLL, and the
    equal-weight seed ensemble of that candidate's config (every candidate sharing it apart from the seed)."""
    val, test = passes.val, passes.test
    val_nll = [nll(val.labels, probs) for probs in val.member_probs]
    best = int(np.argmin(val_nll))
    keys = [config_without_seed(m) for m in members]
    group = [i for i, key in enumerate(keys) if key == keys[best]]
    ours = _scores(test.labels, chosen.probs, class_names)
    single = _scores(test.labels, test.member_probs[best], class_names)
    seeds = _scores(test.labels, test.member_probs[group].mean(axis=0), class_names)
    names = [members[i].name for i in group]
    best_name = members[best].name
    note = (
        f"only {best_name} has this config, so the seed ensemble is that 1 model"
        if len(group) == 1
        else f"{len(group)} candidates share this config apart from the seed"
    )
    return {
        "probabilities": "raw (T = 1) for all three, so the comparison is between the models, not the calibration",
        "library_ensemble": ours,
        "best_single": {
            "name": best_name,
            "val_nll": val_nll[best],
            "test": single,
            "statement": comparison_statement(ours, single, f"the best single model ({best_name})"),
        },
        "seed_ensemble": {
            "names": names,
            "num_members": len(group),
            "note": note,
            "test": seeds,
            "statement": comparison_statement(ours, seeds, f"a {len(group)}-member seed ensemble of the best config"),
        },
    }


def run_ensembles(
    members: list[found.Member],
    where: dict[str, dict[str, Any]],
    passes: SplitPredictions,
    chosen: Chosen,
    class_names: tuple[str, ...],
) -> list[dict[str, Any]]:
    """On test, before temperature: each run folder of the library as it stands alone, the plain average of its
    members, so a user who launched a recipe learns by how much the selection beats it."""
    test, ours = passes.test, _scores(passes.test.labels, chosen.probs, class_names)
    runs: dict[str, list[int]] = {}
    for i, member in enumerate(members):
        if where[member.name]["kind"] == "member":
            runs.setdefault(where[member.name]["source"], []).append(i)
    entries = []
    for run, indices in runs.items():
        theirs = _scores(test.labels, test.member_probs[indices].mean(axis=0), class_names)
        label = f"the plain {len(indices)}-member ensemble of run {Path(run).name}"
        entries.append(
            {
                "run": run,
                "names": [members[i].name for i in indices],
                "test": theirs,
                "statement": comparison_statement(ours, theirs, label),
            }
        )
    return entries


def _scores(labels: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float]:
    metrics = classification_metrics(labels, probs, class_names)
    return {key: metrics[key] for key in COMPARED_METRICS}


def _entries(
    prepared: PreparedLibrary, passes: SplitPredictions, trust: dict[str, Any], section: dict[str, Any]
) -> list[dict[str, Any]]:
    members, val, test = prepared.pool.members, passes.val, passes.test
    flags = {f["seed"]: f for f in trust["flags"]}
    picks = {p["name"]: p for p in section["selection"]["picks"]}
    settings = varying_settings(members)
    return [
        {
            "name": m.name,
            **prepared.pool.where[m.name],
            **rep.member_entry(m, test.member_probs[i], test.labels, prepared.info.class_names),
            "family": family(m),
            "settings": settings[i],
            "val_accuracy": flags[m.name]["val_accuracy"],
            "val_nll": nll(val.labels, val.member_probs[i]),
            "flagged": flags[m.name]["flagged"],
            "weight": picks.get(m.name, {}).get("weight", 0.0),
            "times_picked": picks.get(m.name, {}).get("times", 0),
        }
        for i, m in enumerate(members)
    ]


def _context(
    cfg: EnsembleEvalConfig, prepared: PreparedLibrary, passes: SplitPredictions, resources: dict[str, Any]
) -> dict[str, Any]:
    return {
        "library_dirs": [str(s.root) for s in prepared.pool.sources],
        "out_dir": str(cfg.out_dir),
        "tta": cfg.tta,
        "tta_modes": tta_modes(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cost": run_cost(resources),
        "data_root": str(prepared.data_root),
        "test_file": str(prepared.files["test"]),
        "val_file": str(prepared.files["val"]),
        "evaluation": passes.evaluation(cfg.batch_size),
    }


def _warn_if_evaluated_elsewhere(prepared: PreparedLibrary) -> None:
    for split in ("val", "test"):
        evaluated, trained = prepared.evaluated_on[split], prepared.trained_on[split]
        if evaluated.content != trained.content:
            log.warning(
                "library: evaluating on %s (%s), not the %s file the candidates were trained with (%s)",
                evaluated.path,
                evaluated.describe(),
                split,
                trained.describe(),
            )
