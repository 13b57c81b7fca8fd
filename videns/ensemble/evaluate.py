"""Evaluate an ensemble's members on validation and test, combine and calibrate on validation, write its folder.

A run's ensemble (``--run_dir``) goes to RUN/ensemble/; an ensemble selected from a library of runs and sweeps
(``--library``) is evaluated by :mod:`videns.ensemble.library` with the same passes, decisions and outputs.

Validation decides (collapse flags, combination weights, the temperature: see
:mod:`videns.ensemble.trust`); test only scores. Each split is read once. The
outputs are published as :func:`videns.ensemble.outputs.publish` says: report.json
last, an earlier report kept until a complete new set exists.
"""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videns.ensemble import library
from videns.ensemble import members as found
from videns.ensemble import report as rep
from videns.ensemble.eval_config import EnsembleEvalConfig
from videns.ensemble.outputs import OUTPUT_FILES, ensemble_writers, json_writer, publish
from videns.ensemble.resources import merge_resource_logs, run_cost
from videns.ensemble.scoring import baselines, check_data, predict_splits, strongest, tta_modes
from videns.ensemble.trust import choose_on_validation
from videns.errors import CheckpointError, ConfigError
from videns.folders import EnsembleFolder, RunFolder
from videns.logs import setup_logging
from videns.member.ledger import read_restarts

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_FILES", "EnsembleEvalConfig", "evaluate_and_summarize", "evaluate_ensemble", "publish"]


def evaluate_ensemble(cfg: EnsembleEvalConfig) -> dict[str, Any]:
    """Evaluate, write every output in the ensemble folder and return the report.

    For a run: raises CheckpointError (after writing a report saying so) when no
    member is usable, and CheckpointError/DataError when members disagree with
    each other or with the test file (then nothing is written). A library is
    checked whole before anything is written (:func:`videns.ensemble.library.prepare_library`).
    """
    if cfg.library:
        return library.evaluate_library(cfg, library.prepare_library(cfg))
    return _evaluate_run(cfg)


def _evaluate_run(cfg: EnsembleEvalConfig) -> dict[str, Any]:
    seeds = found.select_seeds(found.expected_seeds(cfg.run_dir), cfg.members, cfg.run_dir)
    member_set = found.load_members(cfg.run_dir, seeds)
    run = RunFolder(cfg.run_dir)
    resources = merge_resource_logs(
        {f"seed_{s}": run.member(s).resources for s in seeds},
        restarts={f"seed_{s}": read_restarts(run.member(s)) for s in seeds},
    )
    context = {
        "run_dir": str(cfg.run_dir),
        "tta": cfg.tta,
        "tta_modes": tta_modes(cfg),
        "expected_seeds": seeds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cost": run_cost(resources),
    }
    if not member_set.members:
        error = f"no usable member in {cfg.run_dir} (seeds {seeds}): " + "; ".join(
            f"seed {s.seed} {s.reason}" for s in member_set.skipped
        )
        failure = rep.failure_report(error=error, skipped=member_set.skipped, context=context)
        publish(cfg.out_dir, failure, {EnsembleFolder.RESOURCES_JSON: json_writer(resources)})
        raise CheckpointError(f"{error}; see {cfg.out_dir / EnsembleFolder.REPORT_JSON}")

    members = member_set.members
    data_root = cfg.data_root or _saved_data_root(members)
    files, info = check_data(members, data_root)
    passes = predict_splits(cfg, members, files, info)
    val, test = passes.val, passes.test
    trust, chosen = choose_on_validation(
        [m.seed for m in members], val, test, info.class_names, cfg.combine, cfg.coverage, cfg.mondrian
    )
    flags = {f["seed"]: f for f in trust["flags"]}
    entries = [
        {
            **rep.member_entry(m, test.member_probs[i], test.labels, info.class_names),
            "val_accuracy": flags[m.seed]["val_accuracy"],
            "flagged": flags[m.seed]["flagged"],
        }
        for i, m in enumerate(members)
    ]
    context.update(
        data_root=str(data_root),
        test_file=str(files["test"]),
        val_file=str(files["val"]),
        evaluation=passes.evaluation(cfg.batch_size),
    )
    report = rep.build_report(
        members=entries,
        ensemble_probs=chosen.probs,
        labels=test.labels,
        class_names=info.class_names,
        skipped=member_set.skipped,
        context=context,
    )
    report["ensemble"]["combination"] = cfg.combine
    fitted = baselines(files, info)
    report.update(trust, num_val_items=len(val.labels), baselines=fitted, baseline=strongest(fitted))
    title = (
        f"Ensemble of {len(members)}{' with TTA' if report['tta'] else ''} ({chosen.name}): "
        f"accuracy {report['ensemble']['accuracy']:.4f}"
    )
    publish(
        cfg.out_dir, report, ensemble_writers(report, members, val, test, chosen, info.class_names, resources, title)
    )
    return report


def evaluate_and_summarize(cfg: EnsembleEvalConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate as a process does: logging to the ensemble folder's log, then ``say`` the summary table.

    A library's log starts only once the whole pool has passed its checks, so a refused pool leaves no folder.
    """
    if cfg.library:
        prepared = library.prepare_library(cfg)
        setup_logging(EnsembleFolder(cfg.out_dir).log)
        report = library.evaluate_library(cfg, prepared)
    else:
        setup_logging(EnsembleFolder(cfg.out_dir).log)
        report = evaluate_ensemble(cfg)
    say(rep.format_summary(report).rstrip("\n"))
    say(f"report: {EnsembleFolder(cfg.out_dir).report_md}")
    return report


def _saved_data_root(members: list[found.Member]) -> Path:
    roots = [m.data_root for m in members]
    if roots[0] is None:
        raise ConfigError(f"member seed {members[0].seed}: its checkpoint records no data.root; pass --data_root")
    others = {str(r) for r in roots[1:] if r is not None and r != roots[0]}
    if others:
        log.warning(
            "members were trained on different data.root values (%s and %s); testing on %s",
            roots[0],
            ", ".join(sorted(others)),
            roots[0],
        )
    return roots[0]
