"""report.md and terminal sections for what validation decided: flags, combinations, calibration, baseline, items."""

from typing import Any

from videns.ensemble.combine import COMBINATIONS
from videns.ensemble.uncertainty import UNCERTAINTY_COLUMNS

COMBINATION_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "nll", "ece")


def trust_markdown(report: dict[str, Any]) -> list[str]:
    """The sections after the summary; empty for a report written before they existed."""
    if "flags" not in report:
        return []
    out = []
    for title, lines in (("Collapsed members (validation)", _flag_lines(report)),
                         ("Combinations (weights from validation; test metrics before temperature)",
                          _combination_table(report)),
                         ("Calibration (temperature fitted on validation NLL)", _calibration_table(report)),
                         ("Sanity baseline", baseline_lines(report)),
                         ("Most uncertain test items", _item_table(report["most_uncertain"])),
                         ("Most confidently wrong test items", _item_table(report["confidently_wrong"]))):
        out += [f"## {title}", "", *lines, ""]
    return out


def trust_summary(report: dict[str, Any]) -> str:
    """Lines for the terminal: the combination, flags, calibration and the baseline verdict."""
    if "flags" not in report:
        return ""
    combination, calibration = report["combination"], report["calibration"]["test"]
    lines = [f"combination {combination['chosen']}, temperature {combination['temperature']:.3f}: test NLL "
             f"{calibration['before']['nll']:.4f} -> {calibration['after']['nll']:.4f}, ECE "
             f"{calibration['before']['ece']:.4f} -> {calibration['after']['ece']:.4f}"]
    lines += [f"flagged seed {f['seed']}: {f['reason']}" for f in report["flags"] if f["flagged"]]
    lines.append(baseline_verdict(report))
    return "".join(line + "\n" for line in lines)


def baseline_verdict(report: dict[str, Any]) -> str:
    baseline = report.get("baseline") or {}
    if "accuracy" not in baseline:
        return f"Sanity baseline not run: {baseline.get('skipped', 'no train split')}."
    ours, theirs = report["ensemble"]["accuracy"], baseline["accuracy"]
    verdict = "beats" if ours > theirs else "does NOT beat"
    return (f"The ensemble ({ours:.4f} test accuracy) {verdict} the logistic-regression baseline on per-item "
            f"mean and std ({theirs:.4f}).")


def baseline_lines(report: dict[str, Any]) -> list[str]:
    baseline = report.get("baseline") or {}
    lines = [baseline_verdict(report), ""]
    if "accuracy" in baseline:
        rows = [[name, *(f"{entry[k]:.4f}" for k in COMBINATION_METRICS)]
                for name, entry in (("ensemble", report["ensemble"]), ("baseline", baseline))]
        lines += _table(["model", *COMBINATION_METRICS], rows)
        lines += ["", f"Baseline fitted on {baseline['train_items']} of {baseline['train_items_in_file']} "
                  f"train items."]
    return lines


def _flag_lines(report: dict[str, Any]) -> list[str]:
    rows = [[str(f["seed"]), f"{f['val_accuracy']:.4f}", "**flagged**" if f["flagged"] else "ok",
             (f["reason"] or "").replace("|", "\\|")] for f in report["flags"]]
    lines = [f"Rule: {report['collapse_rule']}.", "", *_table(["seed", "val accuracy", "verdict", "reason"], rows)]
    averaged = report.get("flagged_in_combination") or []
    if averaged:
        lines += ["", f"**Warning:** flagged seed(s) {averaged} are averaged into the chosen combination "
                  f"`{report['combination']['chosen']}`; `--combine mean_unflagged` leaves them out."]
    return lines


def _combination_table(report: dict[str, Any]) -> list[str]:
    chosen = report["combination"]["chosen"]
    rows = []
    for name in COMBINATIONS:
        entry = report["combinations"][name]
        weights = ", ".join(f"{seed}: {w:.3f}" for seed, w in entry["weights"].items())
        label = f"**{name}** (chosen)" if name == chosen else name
        rows.append([label, *(f"{entry['test'][k]:.4f}" for k in COMBINATION_METRICS),
                     f"{entry['validation']['before']['nll']:.4f}", f"{entry['temperature']:.3f}", weights])
    return _table(["combination", *(f"test {k}" for k in COMBINATION_METRICS), "val NLL", "T", "weights by seed"],
                  rows)


def _calibration_table(report: dict[str, Any]) -> list[str]:
    calibration = report["calibration"]
    rows = [[f"{split} {when}", *(f"{calibration[split][when][k]:.4f}" for k in ("nll", "ece", "brier"))]
            for split in ("validation", "test") for when in ("before", "after")]
    note = (" It stopped at a bound of its search: validation is (nearly) separable, so its NLL keeps falling "
            "as T shrinks; treat the calibrated probabilities with care." if calibration.get("at_bound") else "")
    return [f"Temperature T = {calibration['temperature']:.4f} (see reliability.png).{note}", "",
            *_table(["split", "NLL", "ECE", "Brier"], rows)]


def _item_table(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["None."]
    rows = [[str(i["item"]), i["true_class"], i["predicted_class"], *(f"{i[k]:.3f}" for k in UNCERTAINTY_COLUMNS)]
            for i in items]
    return _table(["item", "true", "predicted", *UNCERTAINTY_COLUMNS], rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
