"""report.md and terminal sections for what validation decided: flags, combinations, calibration, prediction
sets, selective prediction, baselines and items."""

from typing import Any

from videns.ensemble.combine import COMBINATIONS
from videns.ensemble.uncertainty import UNCERTAINTY_COLUMNS

COMBINATION_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "nll", "ece")


def trust_markdown(report: dict[str, Any]) -> list[str]:
    """The sections after the summary; empty for a report written before they existed."""
    if "flags" not in report:
        return []
    out = []
    scale = report["calibration"].get("probabilities", "temperature-scaled")
    for title, lines in (
        ("Collapsed members (validation)", _flag_lines(report)),
        ("Combinations (weights from validation; test metrics before temperature)", _combination_table(report)),
        ("Calibration (temperature fitted on validation NLL)", _calibration_table(report)),
        ("Prediction sets (split conformal, calibrated on validation)", conformal_lines(report)),
        ("Selective prediction (hand the least confident items to a person)", selective_lines(report)),
        ("Baselines", baseline_lines(report)),
        (f"Most uncertain test items (probabilities: {scale})", _item_table(report["most_uncertain"])),
        (f"Most confidently wrong test items (probabilities: {scale})", _item_table(report["confidently_wrong"])),
    ):
        if lines:
            out += [f"## {title}", "", *lines, ""]
    return out


def trust_summary(report: dict[str, Any]) -> str:
    """Lines for the terminal: the combination, flags, calibration and the baseline verdict."""
    if "flags" not in report:
        return ""
    combination, calibration = report["combination"], report["calibration"]
    applied = calibration.get("applied", True)
    reason = calibration.get("reason") or f"T = {calibration['temperature']:.3f}"
    lines = [f"combination {combination['chosen']}; temperature {'applied: ' if applied else ''}{reason}"]
    if applied:
        test = calibration["test"]
        lines.append(
            f"  test NLL {test['before']['nll']:.4f} -> {test['after']['nll']:.4f}, ECE "
            f"{test['before']['ece']:.4f} -> {test['after']['ece']:.4f}"
        )
    lines += [f"flagged {_flag_label(f)}: {f['reason']}" for f in report["flags"] if f["flagged"]]
    if "conformal" in report:
        lines.append(_conformal_sentence(report["conformal"]))
    lines.append(baseline_verdict(report))
    return "".join(line + "\n" for line in lines)


def baseline_verdict(report: dict[str, Any]) -> str:
    """One sentence: does the ensemble beat the strongest fitted baseline, named."""
    baseline = report.get("baseline") or {}
    if "accuracy" not in baseline:
        return f"No baseline was fitted: {baseline.get('skipped', 'no train split')}."
    ours, theirs = report["ensemble"]["accuracy"], baseline["accuracy"]
    if ours > theirs:
        return (
            f"The ensemble ({ours:.4f} test accuracy) beats the strongest baseline, {baseline['model']} ({theirs:.4f})."
        )
    return (
        f"The ensemble ({ours:.4f} test accuracy) does NOT beat the strongest baseline, {baseline['model']} "
        f"({theirs:.4f}): on this data a cheaper model is at least as accurate."
    )


def baseline_lines(report: dict[str, Any]) -> list[str]:
    baselines = report.get("baselines") or ([report["baseline"]] if report.get("baseline") else [])
    lines = [baseline_verdict(report), ""]
    rows = [["ensemble", *(_fmt(report["ensemble"][k]) for k in COMBINATION_METRICS), "", ""]]
    for entry in baselines:
        if "accuracy" in entry:
            rows.append(
                [
                    entry["model"],
                    *(_fmt(entry[k]) for k in COMBINATION_METRICS),
                    f"{entry['train_items']} of {entry['train_items_in_file']}",
                    f"{entry['seconds']:.1f}" if "seconds" in entry else "",
                ]
            )
        else:
            lines.append(f"- {entry['model']}: not run ({entry['skipped']}).")
    lines += ["", *_table(["model", *COMBINATION_METRICS, "train items", "seconds"], rows)]
    return lines + ["", "NLL and ECE are n/a for a ridge classifier: it gives no probabilities."]


def conformal_lines(report: dict[str, Any]) -> list[str]:
    conformal = report.get("conformal")
    if not conformal:
        return []
    test = conformal["test"]
    kind = "for each true class (Mondrian)" if conformal["mondrian"] else "over all classes"
    lines = [
        f"A set holds every class the raw combination gives enough probability that, on the "
        f"{conformal['calibration_items']} validation items, the true class would have been in it "
        f"{conformal['coverage_requested']:.0%} of the time {kind} (finite-sample (n+1) correction). "
        "An empty set means no class is plausible enough; a large one, that the ensemble cannot tell "
        f"those classes apart. {_conformal_sentence(conformal)}",
        "",
    ]
    num_items = sum(e["support"] for e in test["per_class"].values())
    shortfall = coverage_shortfall(conformal, num_items)
    if shortfall:
        lines += [f"**Warning:** {shortfall}", ""]
    lines += [f"Empty sets: {test['empty']:.1%} of items; single-class sets: {test['singleton']:.1%}.", ""]
    rows = [
        [name, str(entry["support"]), _fmt(entry["coverage"]), _fmt(entry["mean_size"])]
        for name, entry in test["per_class"].items()
    ]
    rows.append(["all", str(num_items), _fmt(test["coverage"]), _fmt(test["mean_size"])])
    return lines + _table(["true class", "items", "coverage", "mean set size"], rows)


def coverage_shortfall(conformal: dict[str, Any], num_items: int) -> str | None:
    """A sentence when test coverage falls short of the request by more than two binomial standard errors."""
    target, got = conformal["coverage_requested"], conformal["test"]["coverage"]
    error = (target * (1 - target) / max(num_items, 1)) ** 0.5
    if got >= target - 2 * error:
        return None
    return (
        f"test coverage {got:.4f} is below the requested {target:.0%} by more than sampling error "
        f"({num_items} items, standard error {error:.3f}): test items do not behave like validation ones. "
        "Each member's best epoch was chosen on validation, which makes validation look easier than new "
        "data; a larger validation split, or new data unlike it, are the usual causes."
    )


def _conformal_sentence(conformal: dict[str, Any]) -> str:
    test = conformal["test"]
    return (
        f"Prediction sets at {conformal['coverage_requested']:.0%} requested coverage: test coverage "
        f"{test['coverage']:.4f}, mean set size {test['mean_size']:.2f}."
    )


def selective_lines(report: dict[str, Any]) -> list[str]:
    selective = report.get("selective")
    if not selective:
        return []
    coverages = list(next(iter(_rankings(selective).values()))["accuracy_at"])
    rows = [
        [name, f"{entry['aurc']:.4f}", *(_fmt(entry["accuracy_at"][c]) for c in coverages)]
        for name, entry in _rankings(selective).items()
    ]
    return [
        f"Items ranked by confidence ({selective['probabilities']} probabilities); keep the most confident "
        f"share, hand the rest on. Accuracy on all items: {selective['full_coverage_accuracy']:.4f}. AURC is "
        "the mean error rate over every share kept (lower is better); see risk_coverage.png.",
        "",
        *_table(["ranked by", "AURC", *(f"accuracy at {float(c):.0%} kept" for c in coverages)], rows),
    ]


def _rankings(selective: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "max probability": selective["by_max_probability"],
        "mutual information (lowest first)": selective["by_mutual_information"],
    }


def _flag_lines(report: dict[str, Any]) -> list[str]:
    rows = [
        [
            str(f["seed"]),
            f"{f['val_accuracy']:.4f}",
            "**flagged**" if f["flagged"] else "ok",
            (f["reason"] or "").replace("|", "\\|"),
        ]
        for f in report["flags"]
    ]
    named = "library" in report  # a library's candidates are named, not seeded
    lines = [
        f"Rule: {report['collapse_rule']}.",
        "",
        *_table(["candidate" if named else "seed", "val accuracy", "verdict", "reason"], rows),
    ]
    averaged = report.get("flagged_in_combination") or []
    if averaged and named:
        warning = (
            f"**Warning:** flagged candidate(s) {averaged} were picked by the greedy selection: they "
            "lower validation NLL beside the others all the same."
        )
    else:
        warning = (
            f"**Warning:** flagged seed(s) {averaged} are averaged into the chosen combination "
            f"`{report['combination']['chosen']}`; `--combine mean_unflagged` leaves them out."
        )
    return lines + (["", warning] if averaged else [])


def _flag_label(flag: dict[str, Any]) -> str:
    return f"seed {flag['seed']}" if isinstance(flag["seed"], int) else str(flag["seed"])


def _combination_table(report: dict[str, Any]) -> list[str]:
    chosen = report["combination"]["chosen"]
    rows = []
    for name in COMBINATIONS:
        entry = report["combinations"][name]
        shown = {seed: w for seed, w in entry["weights"].items() if w > 0 or "library" not in report}
        weights = ", ".join(f"{seed}: {w:.3f}" for seed, w in shown.items())
        label = f"**{name}** (chosen)" if name == chosen else name
        rows.append(
            [
                label,
                *(f"{entry['test'][k]:.4f}" for k in COMBINATION_METRICS),
                f"{entry['validation']['before']['nll']:.4f}",
                f"{entry['temperature']:.3f}",
                weights,
            ]
        )
    by = "weights above 0" if "library" in report else "weights by seed"
    return _table(["combination", *(f"test {k}" for k in COMBINATION_METRICS), "val NLL", "T", by], rows)


def _calibration_table(report: dict[str, Any]) -> list[str]:
    calibration = report["calibration"]
    applied = calibration.get("applied", True)
    whens = ("before", "after") if applied else ("before",)
    rows = [
        [
            f"{split} {'raw' if when == 'before' else 'scaled'}",
            *(f"{calibration[split][when][k]:.4f}" for k in ("nll", "ece", "brier")),
        ]
        for split in ("validation", "test")
        for when in whens
    ]
    fitted = calibration.get("fitted", calibration["temperature"])
    return [
        f"Fitted T = {fitted:.4f}; {calibration.get('reason', 'applied')}. Probabilities below and in "
        f"predictions.csv are {calibration.get('probabilities', 'temperature-scaled')} (see reliability.png).",
        "",
        *_table(["split", "NLL", "ECE", "Brier"], rows),
    ]


def _item_table(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["None."]
    rows = [
        [
            str(i["item"]),
            i["true_class"],
            i["predicted_class"],
            i.get("prediction_set", "") or "(empty)",
            *(f"{i[k]:.3f}" for k in UNCERTAINTY_COLUMNS),
        ]
        for i in items
    ]
    return _table(["item", "true", "predicted", "prediction set", *UNCERTAINTY_COLUMNS], rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
