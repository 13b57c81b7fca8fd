"""A library ensemble's own report sections: the pool, the picks, and plain sentences comparing it on test."""

import json
from pathlib import Path
from typing import Any

POOL_METRICS = ("val_accuracy", "val_nll", "accuracy", "nll")
COMPARISON_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "nll", "ece")


def comparison_statement(ours: dict[str, float], theirs: dict[str, float], what: str) -> str:
    """ "The library ensemble beats X by 1.25 points of test accuracy (...)", or says that it does not."""
    points = 100 * (ours["accuracy"] - theirs["accuracy"])
    scores = f"({ours['accuracy']:.4f} against {theirs['accuracy']:.4f})"
    if points > 0:
        accuracy = f"The library ensemble beats {what} by {points:.2f} points of test accuracy {scores}"
    else:
        accuracy = f"The library ensemble does not beat {what} on test accuracy {scores}" + (
            f": {-points:.2f} points behind" if points < 0 else ": the same"
        )
    lower = theirs["nll"] - ours["nll"]
    verdict = "the same" if abs(lower) < 5e-5 else f"lower by {lower:.4f}" if lower > 0 else f"higher by {-lower:.4f}"
    return f"{accuracy}; its test NLL is {ours['nll']:.4f} against {theirs['nll']:.4f}, {verdict}."


def library_markdown(report: dict[str, Any]) -> list[str]:
    """The library sections of report.md, after the summary."""
    library = report["library"]
    out = []
    for title, lines in (
        (
            "Library ensemble against the best single model and a seed ensemble (test)",
            _comparison_lines(library["comparisons"]),
        ),
        ("Picks (validation only)", _pick_lines(library["selection"])),
        ("Pool (validation scores decide; test scores only report)", _pool_table(report)),
        ("Data", _data_lines(library["data"])),
    ):
        out += [f"## {title}", "", *lines, ""]
    return out


def library_summary(report: dict[str, Any]) -> str:
    """Lines for the terminal: the picks and the two comparisons."""
    library = report["library"]
    picks = ", ".join(f"{p['name']} x{p['times']}" for p in library["selection"]["picks"])
    comparisons = library["comparisons"]
    lines = [
        f"library: {library['selection']['num_candidates']} candidates, picked {picks}",
        comparisons["best_single"]["statement"],
        comparisons["seed_ensemble"]["statement"],
        *(run["statement"] for run in comparisons.get("run_ensembles", [])),
    ]
    return "".join(line + "\n" for line in lines)


def _comparison_lines(comparisons: dict[str, Any]) -> list[str]:
    best, seeds = comparisons["best_single"], comparisons["seed_ensemble"]
    rows = [
        ["**library ensemble**", *(_fmt(comparisons["library_ensemble"][k]) for k in COMPARISON_METRICS)],
        [f"best single model by validation NLL: {best['name']}", *(_fmt(best["test"][k]) for k in COMPARISON_METRICS)],
        [
            f"seed ensemble of the best config ({seeds['num_members']}: {', '.join(seeds['names'])})",
            *(_fmt(seeds["test"][k]) for k in COMPARISON_METRICS),
        ],
    ]
    runs = comparisons.get("run_ensembles", [])
    rows += [
        [
            f"plain ensemble of run {Path(run['run']).name} ({len(run['names'])})",
            *(_fmt(run["test"][k]) for k in COMPARISON_METRICS),
        ]
        for run in runs
    ]
    return [
        f"- {best['statement']}",
        f"- {seeds['statement']}",
        *(f"- {run['statement']}" for run in runs),
        f"- Seed ensemble: {seeds['note']}.",
        f"- Probabilities: {comparisons['probabilities']}.",
        "",
        *_table(["model", *(f"test {k}" for k in COMPARISON_METRICS)], rows),
    ]


def _pick_lines(selection: dict[str, Any]) -> list[str]:
    cap = "no cap" if selection["max_members"] is None else f"at most {selection['max_members']} distinct"
    rows = [[p["name"], str(p["times"]), f"{p['weight']:.4f}"] for p in selection["picks"]]
    summary = (
        f"{selection['rule']} ({cap}); {_picks(selection['num_picks'])} from {selection['num_candidates']} "
        f"candidates, validation NLL {selection['validation_nll']:.4f}."
    )
    order = f"Pick order: {', '.join(selection['pick_order'])}."
    return [summary, "", order, "", *_table(["candidate", "picks", "weight"], rows)]


def _picks(count: int) -> str:
    return f"{count} pick{'' if count == 1 else 's'}"


def _pool_table(report: dict[str, Any]) -> list[str]:
    rows = [
        [
            m["name"],
            m["family"],
            _settings(m["settings"]),
            *(_fmt(m[k]) for k in POOL_METRICS),
            f"{m['weight']:.4f}" if m["weight"] else "-",
            "**flagged**" if m["flagged"] else "ok",
        ]
        for m in report["members"]
    ]
    return _table(
        [
            "candidate",
            "family",
            "settings that differ in the pool",
            "val accuracy",
            "val NLL",
            "test accuracy",
            "test NLL",
            "weight",
            "collapse check",
        ],
        rows,
    )


def _data_lines(data: dict[str, Any]) -> list[str]:
    rows = [[split, "trained on", f["path"], _size(f)] for split, f in data["trained_on"].items()]
    rows += [[split, "evaluated on", f["path"], _size(f)] for split, f in data["evaluated_on"].items()]
    return [
        "Every candidate was trained on the same split files (same size and sha256).",
        "",
        *_table(["split", "use", "file", "size, sha256"], rows),
    ]


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in settings.items()).replace("|", "\\|") or "-"


def _size(facts: dict[str, Any]) -> str:
    return "missing" if facts["size"] is None else f"{facts['size']} bytes, {facts['sha256'][:12]}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
