"""The bench's ratios, each with its workload and target, and the table printed for people."""

import math
from typing import Any

from videns.bench.ecg import SHAPES

# Every workload names at least these.
WORKLOAD_KEYS = ("model", "batch", "workers", "device")


def ratio_entry(
    key: str, value: float, workload: dict[str, Any], definition: str, target: str | None = None, extra_ok: bool = True
) -> dict[str, Any]:
    """One ratio: its value, what it divides, on which workload, and whether it meets its target."""
    met = None
    if target is not None and not math.isnan(value):
        op, bound = target.split()
        met = (value >= float(bound) if op == ">=" else value <= float(bound)) and extra_ok
    return {
        "key": key,
        "value": value,
        "definition": definition,
        "target": target,
        "met": met,
        "workload": {k: workload.get(k) for k in WORKLOAD_KEYS} | workload,
    }


def collect_ratios(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ratio of a bench result, in report order."""
    entries = []
    for loader in result.get("loader", {}).values():
        entries.append(
            ratio_entry(
                "loader_speedup",
                loader["loader_speedup"],
                loader["workload"],
                "reference epoch seconds / ours (split in RAM), same batches' items",
                ">= 10",
            )
        )
        entries.append(
            ratio_entry(
                "loader_speedup_first_epoch_with_preload",
                loader["loader_speedup_first_epoch_with_preload"],
                loader["workload"],
                "reference epoch / (our preload + one epoch)",
            )
        )
    training = result.get("training", {})
    for name in ("fixed", "mixed"):
        if name in training:
            entries.append(_epoch_entry(training[name]))
    if "unpacked_lstm" in training:
        steps = training["unpacked_lstm"]
        entries.append(
            ratio_entry(
                "unpacked_lstm_step_ratio",
                steps["unpacked_lstm_step_ratio"],
                steps["workload"],
                "seconds per training step on a variable-length batch: the unpacked "
                "per-direction LSTM (ours on CPU) / the same model on torch's packing",
            )
        )
    if "step_time_ratio" in training.get("full_model_steps", {}):
        steps = training["full_model_steps"]
        entries.append(
            ratio_entry(
                "step_time_ratio",
                steps["step_time_ratio"],
                steps["workload"],
                "ours / reference seconds per training step, full-size model",
            )
        )
    checkpoint = result.get("checkpoint")
    if checkpoint:
        for key, definition, target in (
            ("checkpoint_save_ratio", checkpoint["headline"].split(" = ", 1)[1], "<= 1.0"),
            (
                "checkpoint_save_returns_ratio",
                "seconds until our save() returns (background commit) / torch.save + fsync",
                None,
            ),
            ("checkpoint_save_durable_ratio", "seconds until ours is on disk (save + wait) / torch.save + fsync", None),
            (
                "checkpoint_save_ratio_vs_plain_torch_save",
                "seconds until our save() returns / plain torch.save (no fsync)",
                None,
            ),
            ("checkpoint_load_ratio", "ours (sha256-verified) / the same restore without verification", None),
        ):
            entries.append(ratio_entry(key, checkpoint[key], checkpoint["workload"], definition, target))
    ensemble = result.get("ensemble")
    if ensemble:
        entries.append(
            ratio_entry(
                "ensemble_speedup",
                ensemble["ensemble_speedup"],
                ensemble["workload"],
                "our 4-member pass (sequences/s) / reference member-by-member passes",
            )
        )
    for key, name, ecg, target in _ecg_models(result):
        if "equal_quality" not in ecg:  # a shape timed by steps only
            entries.append(
                ratio_entry(
                    key,
                    ecg[key],
                    ecg["workload"],
                    f"{name}: ours / the reference model (GRU always packed) seconds per training step, one batch",
                    target,
                )
            )
            continue
        entries.append(
            ratio_entry(
                key,
                ecg[key],
                ecg["workload"],
                f"{name}: ours / the reference loop (GRU always packed) steady epoch wall seconds; met also needs our "
                f"best val accuracy no worse than the reference's by more than {ecg['equal_quality']['tolerance']:.3f}",
                target,
                extra_ok=ecg["equal_quality"]["not_worse"],
            )
        )
    cuda = result.get("cuda", {})
    if cuda.get("available"):
        steps = cuda["full_model_steps"]
        entries.append(
            ratio_entry(
                "bf16_step_ratio",
                steps["bf16_step_ratio"],
                steps["workload"],
                "bf16 autocast / fp32 seconds per step, full-size model",
            )
        )
        entries.append(_epoch_entry(cuda["training"]))
    return entries


def _epoch_entry(training: dict[str, Any]) -> dict[str, Any]:
    quality = training["equal_quality"]
    return ratio_entry(
        "epoch_time_ratio",
        training["epoch_time_ratio"],
        training["workload"],
        "ours / reference steady epoch wall seconds (train + val + saving); met also needs our best "
        f"val accuracy no worse than the reference's by more than {quality['tolerance']:.3f} "
        "(two binomial standard errors)",
        "<= 0.7",
        extra_ok=quality["not_worse"],
    )


def _ecg_models(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str | None]]:
    """(ratio key, "<shape> <model>", its part, its target) for each model of each ECG shape in the result.

    The targets hold on CPU only: on CUDA both loops' GRUs run through cuDNN, and no target is set there.
    """
    return [
        (
            shape.ratio_key,
            f"{shape_name} {name}",
            part,
            shape.cpu_targets.get(name) if part["workload"]["device"] == "cpu" else None,
        )
        for shape_name, shape in SHAPES.items()
        for name, part in result.get(shape_name, {}).items()
        if name != "data"
    ]


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of every ratio, then the absolute figures behind them."""
    lines = ["| ratio | value | target | met | workload |", "| --- | --- | --- | --- | --- |"]
    for entry in result["ratios"]:
        w = entry["workload"]
        where = ", ".join(
            str(x)
            for x in (
                w.get("model"),
                f"batch {w.get('batch')}",
                f"{w.get('workers')} workers",
                w.get("device"),
                w.get("data"),
            )
            if x is not None
        )
        met = {True: "yes", False: "**no**", None: ""}[entry["met"]]
        lines.append(f"| {entry['key']} | {entry['value']:.3g} | {entry['target'] or ''} | {met} | {where} |")
    lines += ["", "| figure | ours | reference |", "| --- | --- | --- |"]
    lines += [f"| {name} | {ours} | {reference} |" for name, ours, reference in figure_rows(result)]
    return "\n".join(lines) + "\n"


def figure_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, loader in result.get("loader", {}).items():
        o, s = loader["ours"], loader["reference"]
        rows.append((f"loader {name}: sequences/s", f"{o['sequences_per_s']:.0f}", f"{s['sequences_per_s']:.0f}"))
        rows.append((f"loader {name}: MB/s (real frames)", f"{o['mb_per_s']:.0f}", f"{s['mb_per_s']:.1f}"))
        rows.append(
            (
                f"loader {name}: preload s (ours) / lazy ours seq/s",
                f"{o['preload_s']:.2f} / {loader['ours_no_preload']['sequences_per_s']:.0f}",
                "",
            )
        )
    training = result.get("training", {})
    for name in ("fixed", "mixed"):
        if name in training:
            rows += _training_rows(f"training {name}", training[name])
    if "unpacked_lstm" in training:
        steps = training["unpacked_lstm"]
        unpacked = steps.get("unpacked", steps["ours"])
        rows.append(
            (
                "variable-length batch: s/step, unpacked LSTM / torch's packing",
                f"{unpacked['median_s']:.3f}",
                f"{steps['packed']['median_s']:.3f} (packed)",
            )
        )
    if "full_model_steps" in training:
        steps = training["full_model_steps"]
        reference = steps.get("reference_step")
        rows.append(
            (
                "full-size model: s/step",
                f"{steps['ours_step']['median_s']:.2f}",
                f"{reference['median_s']:.2f}" if reference else "not timed in this profile",
            )
        )
    checkpoint = result.get("checkpoint")
    if checkpoint:
        rows.append(
            (
                "checkpoint save s: ours returns / on disk; torch.save+fsync / torch.save",
                f"{checkpoint['ours_save']['median_s']:.2f} / {checkpoint['ours_save_durable']['median_s']:.2f}",
                f"{checkpoint['torch_save_fsync']['median_s']:.2f} / {checkpoint['torch_save']['median_s']:.2f}",
            )
        )
        if "stall" in checkpoint:
            stall = checkpoint["stall"]
            steps = [r["steps"] for r in stall["rounds"]]
            rows.append(
                (
                    f"checkpoint stall of ongoing training s (commit overlapped {min(steps)}-{max(steps)} steps "
                    f"of {stall['step_alone_s']:.2f} s; ours / torch.save+fsync)",
                    f"{stall['ours_median_s']:.2f}",
                    f"{checkpoint['torch_save_fsync']['median_s']:.2f}",
                )
            )
        rows.append(
            (
                "checkpoint load s (ours, verified / the same restore, unverified)",
                f"{checkpoint['ours_load']['median_s']:.2f}",
                f"{checkpoint['plain_load']['median_s']:.2f}",
            )
        )
    ensemble = result.get("ensemble")
    if ensemble:
        rows.append(
            (
                "ensemble (4 members): test sequences/s, no TTA / TTA",
                f"{ensemble['no_tta']['sequences_per_s']:.0f} / {ensemble['tta']['sequences_per_s']:.0f}",
                f"{ensemble['reference_member_passes']['sequences_per_s']:.0f}",
            )
        )
    for _, name, ecg, _ in _ecg_models(result):
        rows.append(
            (
                f"{name}: s/step (batch {ecg['workload']['batch']})",
                f"{ecg['steps']['ours']['median_s']:.3f}",
                f"{ecg['steps']['reference']['median_s']:.3f}",
            )
        )
        if "ours" not in ecg:  # timed by steps only
            continue
        o, r = ecg["ours"], ecg["reference"]
        rows.append(
            (
                f"{name}: steady epoch s (train s)",
                f"{o['steady_epoch_s']:.2f} ({o['steady_train_s']:.2f})",
                f"{r['steady_epoch_s']:.2f} ({r['steady_train_s']:.2f})",
            )
        )
        rows.append(
            (
                f"{name}: val accuracy best / final",
                f"{o['best_val_accuracy']:.3f} / {o['final_val_accuracy']:.3f}",
                f"{r['best_val_accuracy']:.3f} / {r['final_val_accuracy']:.3f}",
            )
        )
    cuda = result.get("cuda", {})
    if cuda.get("available"):
        steps, fit = cuda["full_model_steps"], cuda["mig_fit"]
        for precision in ("fp32", "bf16"):
            s = steps[precision]
            memory = f"{s['peak_allocated_bytes'] / 1e9:.2f}/{s['peak_reserved_bytes'] / 1e9:.2f}"
            rows.append(
                (f"cuda full-size {precision}: s/step, peak alloc/reserved GB", f"{s['median_s']:.3f}, {memory}", "")
            )
        rows.append(
            (
                "cuda: fits a 9.8 GB slice at this batch (bf16 / fp32)",
                f"{fit.get('bf16', {}).get('fits')} / {fit.get('fp32', {}).get('fits')}",
                "",
            )
        )
        rows += _training_rows("cuda training", cuda["training"])
    else:
        rows.append(("cuda", cuda.get("note", "not run"), ""))
    return rows


def _training_rows(label: str, training: dict[str, Any]) -> list[tuple[str, str, str]]:
    o, s = training["ours"], training["reference"]
    bound = training.get("input_bound")
    extra = (
        []
        if bound is None
        else [
            (
                f"{label}: reading s per epoch (train + val splits); best ratio from input alone",
                f"{bound['ours_read_s_per_epoch']:.2f}",
                f"{bound['reference_read_s_per_epoch']:.2f}; {bound['best_epoch_time_ratio_from_input_alone']:.2f}",
            )
        ]
    )
    return extra + [
        (
            f"{label}: steady epoch s (train s)",
            f"{o['steady_epoch_s']:.2f} ({o['steady_train_s']:.2f})",
            f"{s['steady_epoch_s']:.2f} ({s['steady_train_s']:.2f})",
        ),
        (
            f"{label}: first epoch with setup s",
            f"{o['first_epoch_with_setup_s']:.2f}",
            f"{s['first_epoch_with_setup_s']:.2f}",
        ),
        (
            f"{label}: val accuracy best / final",
            f"{o['best_val_accuracy']:.3f} / {o['final_val_accuracy']:.3f}",
            f"{s['best_val_accuracy']:.3f} / {s['final_val_accuracy']:.3f}",
        ),
    ]
