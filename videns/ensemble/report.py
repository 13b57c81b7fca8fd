"""The ensemble report: its JSON structure, the Markdown tables and the printed summary."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from videns.ensemble.library_report import library_markdown, library_summary
from videns.ensemble.members import Member, Skipped
from videns.ensemble.report_trust import trust_markdown, trust_summary
from videns.member.ledger import format_restarts
from videns.metrics import classification_metrics

REPORT_VERSION = 1
# Metrics shown in the tables, with column titles; the report holds every metric.
SUMMARY_METRICS = {
    "accuracy": "accuracy",
    "f1_weighted": "F1 weighted",
    "balanced_accuracy": "balanced acc",
    "nll": "NLL",
    "ece": "ECE",
}
MEAN_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "nll", "ece")
# Higher is better for these, so "ensemble minus member" is a gain.
GAIN_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro")


def member_entry(member: Member, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """One member's identity, training facts and test metrics (flat)."""
    val = member.meta.get("val_metrics") or {}
    return {
        "seed": member.seed,
        "best_epoch": member.best_epoch,
        "restarts": member.restarts,
        "best_val_accuracy": val.get("accuracy"),
        "config_hash": member.meta.get("config_hash"),
        "weights_sha256": member.weights_sha256,
        "model": member.meta.get("model"),
        **classification_metrics(labels, probs, class_names),
    }


def build_report(
    *,
    members: list[dict[str, Any]],
    ensemble_probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    skipped: Sequence[Skipped],
    context: dict[str, Any],
) -> dict[str, Any]:
    """The whole report.json: members, ensemble, mean member, gains, skipped members, run context."""
    ensemble = {
        "seeds": [m["seed"] for m in members],
        "num_members": len(members),
        **classification_metrics(labels, ensemble_probs, class_names),
    }
    mean_member = {key: float(np.mean([m[key] for m in members])) for key in MEAN_METRICS}
    std_member = {key: float(np.std([m[key] for m in members])) for key in MEAN_METRICS}
    best = max(members, key=lambda m: m["accuracy"])
    return {
        "version": REPORT_VERSION,
        "status": "ok",
        **context,
        "class_names": list(class_names),
        "num_items": int(len(labels)),
        "ensemble": ensemble,
        "members": members,
        "mean_member": mean_member,
        "std_member": std_member,
        "gain_over_mean_member": {key: ensemble[key] - mean_member[key] for key in GAIN_METRICS},
        "best_member_seed": best["seed"],
        "gain_over_best_member": {key: ensemble[key] - best[key] for key in GAIN_METRICS},
        "skipped": skipped_entries(skipped),
    }


def failure_report(*, error: str, skipped: Sequence[Skipped], context: dict[str, Any]) -> dict[str, Any]:
    """report.json when no member could be evaluated."""
    return {
        "version": REPORT_VERSION,
        "status": "failed",
        "error": error,
        **context,
        "ensemble": None,
        "members": [],
        "skipped": skipped_entries(skipped),
    }


def skipped_entries(skipped: Sequence[Skipped]) -> list[dict[str, Any]]:
    return [{"seed": s.seed, "reason": s.reason} for s in skipped]


def member_label(member: dict[str, Any]) -> str:
    """A report's name for a member: ``seed 42``, or a library candidate's name."""
    return member.get("name") or f"seed {member['seed']}"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """Member rows, then mean member and ensemble, with the summary metrics as strings."""
    rows = [[member_label(m), *(_fmt(m[key]) for key in SUMMARY_METRICS)] for m in report["members"]]
    rows.append([f"mean {_member_word(report)}", *(_fmt(report["mean_member"][key]) for key in SUMMARY_METRICS)])
    rows.append(
        [f"ensemble ({report['ensemble']['num_members']})", *(_fmt(report["ensemble"][key]) for key in SUMMARY_METRICS)]
    )
    return rows


def format_summary(report: dict[str, Any]) -> str:
    """A fixed-width table for the terminal (the CLI prints it)."""
    if report.get("status") != "ok":
        return f"ensemble evaluation failed: {report.get('error')}\n" + _skipped_lines(report)
    header = ["", *SUMMARY_METRICS.values()]
    rows = [header, *summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    gain = report["gain_over_mean_member"]
    lines.append(
        f"gain over mean {_member_word(report)}: accuracy {gain['accuracy']:+.4f}, F1 weighted "
        f"{gain['f1_weighted']:+.4f}{' (TTA)' if report.get('tta') else ''}"
    )
    library = library_summary(report) if "library" in report else ""
    return "\n".join(lines) + "\n" + library + trust_summary(report) + _skipped_lines(report)


def format_markdown(report: dict[str, Any]) -> str:
    """report.md: the same content as report.json, as tables."""
    modes = ", ".join(report.get("tta_modes", []))
    title = (
        f"Library ensemble report: {', '.join(report['library_dirs'])}"
        if "library_dirs" in report
        else f"Ensemble report: {report.get('run_dir')}"
    )
    out = [f"# {title}", ""]
    if report.get("test_file"):
        out.append(f"- test file: `{report['test_file']}`")
    out.append(f"- test-time augmentation: {'on (' + modes + ')' if report.get('tta') else 'off'}")
    if report.get("status") != "ok":
        out += ["", f"**Evaluation failed:** {report.get('error')}", "", *_skipped_table(report)]
        return "\n".join(out) + "\n"
    ens = report["ensemble"]
    who = f"candidates {ens['names']}" if "names" in ens else f"seeds {ens['seeds']}"
    out += [f"- items: {report['num_items']}, members: {ens['num_members']} ({who})", ""]
    names = report["class_names"]
    confusion = _table(
        ["true \\ predicted", *names], [[name, *map(str, row)] for name, row in zip(names, ens["confusion_matrix"])]
    )
    gain = [] if "library" in report else [("Ensemble gain", _gain_table(report))]
    for title, lines in (
        ("Summary", _summary_table(report)),
        *gain,
        ("Ensemble per class", _per_class_table(ens, names)),
        ("Per-class F1 by member", _member_f1_table(report)),
        ("Ensemble confusion matrix (rows: true, columns: predicted)", confusion),
    ):
        out += [f"## {title}", "", *lines, ""]
        if title == "Summary" and "library" in report:
            out += library_markdown(report)
    out += trust_markdown(report)
    out += ["## Cost of the run", "", *_cost_table(report.get("cost")), ""]
    out += _skipped_table(report)
    evaluation = report.get("evaluation") or {}
    if evaluation:
        out += [
            "",
            f"Evaluated on {evaluation['device']} in {evaluation['seconds']:.1f} s "
            f"({evaluation['sequences_per_second']:.0f} sequences/s, {evaluation['num_views']} view(s)).",
        ]
    return "\n".join(out) + "\n"


def _cost_table(cost: dict[str, Any] | None) -> list[str]:
    """Per member and in total: hours, slice-hours by GRES type, restarts by cause, steps replayed, time queued."""
    if not cost:
        return ["No resource log was found."]
    rows = [
        *(
            (label if "/" in label else "seed " + label.removeprefix("seed_"), c)
            for label, c in cost["members"].items()
        ),
        ("total", cost["totals"]),
    ]
    header = ["member", "run hours", "slice-hours", "restarts", "steps replayed", "queued (min)"]
    return _table(
        header,
        [
            [
                name,
                f"{c.get('wall_seconds', 0) / 3600:.3f}",
                _slice_hours(c.get("slice_hours", {})),
                _causes(c),
                str(c.get("replayed_steps", "-")),
                f"{c.get('queued_seconds', 0) / 60:.1f}",
            ]
            for name, c in rows
        ],
    )


def _slice_hours(hours: dict[str, float]) -> str:
    return ", ".join(f"{name}: {h:.3f} h" for name, h in sorted(hours.items())) or "-"


def _causes(cost: dict[str, Any]) -> str:
    return format_restarts(cost.get("restarts", 0), cost.get("restarts_by_cause"))


def _summary_table(report: dict[str, Any]) -> list[str]:
    header = [
        _member_word(report),
        "best epoch",
        "restarts",
        "accuracy",
        "balanced acc",
        "F1 weighted",
        "F1 macro",
        "NLL",
        "ECE",
    ]
    return _table(header, _markdown_rows(report))


def _gain_table(report: dict[str, Any]) -> list[str]:
    mean, best = report["gain_over_mean_member"], report["gain_over_best_member"]
    return _table(
        ["metric", "over mean member", f"over best member (seed {report['best_member_seed']})"],
        [[key, f"{mean[key]:+.4f}", f"{best[key]:+.4f}"] for key in GAIN_METRICS],
    )


def _per_class_table(entry: dict[str, Any], names: Sequence[str]) -> list[str]:
    rows = [
        [
            name,
            *(_fmt(entry["per_class"][name][key]) for key in ("precision", "recall", "f1")),
            str(entry["per_class"][name]["support"]),
        ]
        for name in names
    ]
    return _table(["class", "precision", "recall", "F1", "support"], rows)


def _member_f1_table(report: dict[str, Any]) -> list[str]:
    names = report["class_names"]
    rows = [[member_label(m), *(_fmt(m["per_class"][n]["f1"]) for n in names)] for m in report["members"]]
    rows.append(["ensemble", *(_fmt(report["ensemble"]["per_class"][n]["f1"]) for n in names)])
    return _table(["member", *names], rows)


def _markdown_rows(report: dict[str, Any]) -> list[list[str]]:
    keys = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "nll", "ece")
    rows = [
        [member_label(m), str(m["best_epoch"]), str(m["restarts"]), *(_fmt(m[k]) for k in keys)]
        for m in report["members"]
    ]
    rows.append([f"mean {_member_word(report)}", "", "", *(_fmt(report["mean_member"][k]) for k in keys)])
    rows.append(["**ensemble**", "", "", *(f"**{_fmt(report['ensemble'][k])}**" for k in keys)])
    return rows


def _skipped_table(report: dict[str, Any]) -> list[str]:
    word = _member_word(report)
    if not report.get("skipped"):
        return [f"No {word} was skipped."]
    rows = [[str(s.get("name", s.get("seed"))), s["reason"].replace("|", "\\|")] for s in report["skipped"]]
    return [f"## Skipped {word}s", "", *_table(["name" if "library" in report else "seed", "reason"], rows)]


def _skipped_lines(report: dict[str, Any]) -> str:
    return "".join(
        f"skipped {s['name'] if 'name' in s else 'seed ' + str(s['seed'])}: {s['reason']}\n"
        for s in report.get("skipped", [])
    )


def _member_word(report: dict[str, Any]) -> str:
    return "candidate" if "library" in report or "library_dirs" in report else "member"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
