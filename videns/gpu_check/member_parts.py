"""The parts that train demo members as a user does: bf16 against fp32, a SIGTERM and its resume, four at once.

They run on whatever device ``auto`` picks, so a CPU machine runs the same
commands as a GPU one, and the check is never stale.
"""

import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from videns.checkpoint.store import MODEL_FILE, OPTIMIZER_FILE, CheckpointStore
from videns.errors import ExitCode
from videns.folders import MemberFolder, RunFolder
from videns.gpu_check.runner import CheckContext, PartFailed
from videns.io import read_jsonl
from videns.member.ledger import read_mark, read_restarts

BF16_ACCURACY_SLACK = 0.02  # bf16 may cost at most 2 points of val accuracy against fp32
STOP_AFTER_EPOCHS = 1.5  # the SIGTERM lands mid-epoch, well before the demo member ends
SLICE_GB = 9.8  # the A100 MIG slice the reference recipe targets, emulated with a memory fraction per member
FOUR = 4
DEVICE_FIELDS = ("device", "gpu_name", "mig_instance", "cuda_visible_devices")
SETUP_LINE = " on "  # the member's setup log line: "member seed 42 on cuda:0 (...), precision bf16, AdamW (fused)"


def demo_bf16(ctx: CheckContext) -> dict[str, Any]:
    """The demo member in bf16 (with fused AdamW on CUDA) reaches the fp32 member's val accuracy within 2 points."""
    fp32, bf16 = demo_member(ctx, "fp32"), demo_member(ctx, "bf16", "--trainer.precision", "bf16")
    figures = {"fp32": member_figures(fp32), "bf16": member_figures(bf16)}
    gap = figures["fp32"]["best_val_accuracy"] - figures["bf16"]["best_val_accuracy"]
    figures["accuracy_gap_points"] = round(100 * gap, 2)
    if gap > BF16_ACCURACY_SLACK:
        raise PartFailed(f"bf16 best val accuracy is {100 * gap:.1f} points below fp32's", figures)
    if ctx.cuda and "(fused)" not in figures["bf16"]["setup"]:
        raise PartFailed("the bf16 member on CUDA did not use fused AdamW", figures)
    return figures


def resume(ctx: CheckContext) -> dict[str, Any]:
    """A member stopped by SIGTERM mid-epoch and resumed, against the same member trained without a stop."""
    reference = demo_member(ctx, "fp32")
    resumed = MemberFolder(ctx.work / "resumed")
    stop = stop_with_sigterm(ctx, resumed)
    ctx.expect_success(ctx.run(demo_args(ctx, resumed.root), limit_s=240, what="the resumed member"), "resumed member")
    figures = {**stop, **compare_members(resumed, reference)}
    figures["replayed_steps"] = sum(r.get("replayed_steps", 0) for r in read_restarts(resumed))
    figures["restart_causes"] = [r.get("cause") for r in read_restarts(resumed)]
    if ctx.cuda:  # is the GPU itself run-to-run reproducible? Tells resume differences from kernel ones.
        figures["run_to_run_max_abs_diff"] = compare_members(demo_member(ctx, "fp32-again"), reference)[
            "weights_max_abs_diff"
        ]
    problems = resume_problems(figures)
    if problems:
        raise PartFailed("; ".join(problems), figures)
    return figures


def resume_problems(figures: dict[str, Any]) -> list[str]:
    problems = []
    if figures["replayed_steps"]:
        problems.append(f"{figures['replayed_steps']} step(s) replayed after a stop at a step boundary")
    if not figures["history_continues"]:
        problems.append("the loss curve has a gap or a repeat: epochs " + str(figures["epochs"]))
    if figures["weights_max_abs_diff"] > 0 and not figures.get("run_to_run_max_abs_diff"):
        problems.append(
            f"final weights differ by up to {figures['weights_max_abs_diff']:.3g} from an uninterrupted "
            "member, and uninterrupted members do not differ from each other"
        )
    return problems


def stop_with_sigterm(ctx: CheckContext, member: MemberFolder) -> dict[str, Any]:
    """Start the member, SIGTERM it once it reached 1.5 epochs of steps, and check it saved and exited 143."""
    process = subprocess.Popen(
        demo_args(ctx, member.root), cwd=ctx.commands.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    target = int(STOP_AFTER_EPOCHS * demo_batches_per_epoch(ctx))
    deadline = time.monotonic() + min(180.0, ctx.time_left())
    while process.poll() is None and time.monotonic() < deadline and reached(member) < target:
        time.sleep(0.005)
    signalled_at = reached(member)
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=max(1.0, min(120.0, ctx.time_left())))
    except subprocess.TimeoutExpired:
        process.kill()
        raise PartFailed("the member did not stop within 120 s of SIGTERM") from None
    if process.returncode != ExitCode.STOPPED:
        raise PartFailed(
            f"the member exited {process.returncode} after SIGTERM at step {signalled_at}, not {ExitCode.STOPPED:d}",
            {"output_tail": stderr[-3000:]},
        )
    progress = member.progress()
    return {
        "sigterm_at_step": signalled_at,
        "stopped_at_step": progress.get("global_step"),
        "stopped_in_epoch": progress.get("epoch", 0) + 1,
        "stopped_status": progress.get("status"),
    }


def reached(member: MemberFolder) -> int:
    mark = read_mark(member.reached_step)
    return mark[0] if mark else 0


def demo_batches_per_epoch(ctx: CheckContext) -> int:
    return int(demo_member(ctx, "fp32").progress()["batches_per_epoch"])


def compare_members(member: MemberFolder, reference: MemberFolder) -> dict[str, Any]:
    """Largest differences of final weights, optimizer state and per-epoch losses; whether epochs run 1..N."""
    history, reference_history = read_jsonl(member.history), read_jsonl(reference.history)
    epochs = [h["epoch"] for h in history]
    return {
        "weights_max_abs_diff": max_abs_diff(latest_tensors(member, MODEL_FILE), latest_tensors(reference, MODEL_FILE)),
        "optimizer_max_abs_diff": max_abs_diff(
            latest_tensors(member, OPTIMIZER_FILE), latest_tensors(reference, OPTIMIZER_FILE)
        ),
        "epochs": epochs,
        "history_continues": epochs == list(range(1, len(reference_history) + 1)),
        "train_loss_max_abs_diff": max(
            (abs(a["train_loss"] - b["train_loss"]) for a, b in zip(history, reference_history)), default=float("nan")
        ),
        "same_best_epoch": member.result().get("best_epoch") == reference.result().get("best_epoch"),
    }


def latest_tensors(member: MemberFolder, name: str) -> dict[str, torch.Tensor]:
    latest = CheckpointStore(member.checkpoints).load_latest()
    if latest is None:
        raise PartFailed(f"{member.checkpoints}: no valid checkpoint")
    return latest.load_tensors(name)


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


def four_members(ctx: CheckContext) -> dict[str, Any]:
    """``jobs.launch --array 4 --cluster local``: four members at once, each capped at a 9.8 GB slice's memory."""
    run = RunFolder(ctx.work / "four")
    launched = ctx.run(
        [
            *ctx.commands.launch,
            "--array",
            str(FOUR),
            "--cluster",
            "local",
            "--config",
            str(ctx.commands.demo_config),
            "--run_dir",
            str(run.root),
            "--data.root",
            str(ctx.data_root),
            "--trainer.progress",
            "off",
            "--trainer.max_epochs",
            "4" if ctx.cuda else "2",
            "--trainer.monitor_minutes",
            "0.02",
            "--trainer.gpu_memory_gb",
            str(SLICE_GB),
            "--slurm.cpus_per_task",
            "2",
        ],
        limit_s=300,
        what="jobs.launch --array 4 --cluster local",
    )
    ctx.expect_success(launched, "jobs.launch")
    members = {
        seed: {**member_figures(run.member(seed)), **resource_figures(run.member(seed))} for seed in run.seeds() or []
    }
    figures = {"members": members, "most_at_once": most_at_once([m["ran"] for m in members.values()])}
    problems = four_member_problems(ctx, members, figures["most_at_once"])
    if problems:
        raise PartFailed("; ".join(problems), figures)
    return figures


def four_member_problems(ctx: CheckContext, members: dict[int, dict[str, Any]], at_once: int) -> list[str]:
    problems = [] if len(members) == FOUR else [f"{len(members)} members, not {FOUR}"]
    problems += [f"seed {seed} did not finish" for seed, m in members.items() if not m["finished"]]
    if at_once < 2:
        problems.append("the members never ran at the same time")
    if ctx.cuda:
        cap_gib = SLICE_GB * 1e9 / 2**30
        problems += [
            f"seed {seed} allocated {m['gpu_max_allocated_gb']:.2f} GiB, over its {cap_gib:.2f} GiB cap"
            for seed, m in members.items()
            if (m.get("gpu_max_allocated_gb") or 0) > cap_gib
        ]
        problems += [
            f"seed {seed}'s resource log has no GPU fields"
            for seed, m in members.items()
            if not m.get("gpu_name") or not m.get("device_total_gb")
        ]
    return problems


def resource_figures(member: MemberFolder) -> dict[str, Any]:
    """The resource log's device fields (as the last sample gives them) and its peaks (GiB, as logged)."""
    samples = read_jsonl(member.resources)
    if not samples:
        return {"ran": (0.0, 0.0), "samples": 0}
    last = samples[-1]
    figures: dict[str, Any] = {key: last.get(key) for key in DEVICE_FIELDS}
    figures["device_total_gb"] = last.get("device_total_gb")
    for key in ("device_used_gb", "gpu_max_allocated_gb", "gpu_reserved_gb", "rss_gb"):
        values = [s[key] for s in samples if isinstance(s.get(key), (int, float))]
        figures[key] = max(values) if values else None
    return {**figures, "samples": len(samples), "ran": (samples[0]["time"], last["time"])}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans (start, end) that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = best = 0
    for _, change in events:
        running += change
        best = max(best, running)
    return best


def demo_member(ctx: CheckContext, name: str, *extra: str) -> MemberFolder:
    """The demo member ``name``, trained once per check and reused by later parts."""
    key = f"demo member {name}"
    if key not in ctx.shared:
        member = MemberFolder(ctx.work / name)
        ctx.expect_success(ctx.run(demo_args(ctx, member.root, *extra), limit_s=240, what=key), key)
        ctx.shared[key] = member
    return ctx.shared[key]


def demo_args(ctx: CheckContext, out: Path, *extra: str) -> list[str]:
    return [
        *ctx.commands.train,
        "--config",
        str(ctx.commands.demo_config),
        "--data.root",
        str(ctx.data_root),
        "--out_dir",
        str(out),
        "--trainer.progress",
        "off",
        *extra,
    ]


def member_figures(member: MemberFolder) -> dict[str, Any]:
    """Accuracy, epochs, seconds per training step (median over epochs) and the member's setup line."""
    result, progress, history = member.result(), member.progress(), read_jsonl(member.history)
    per_epoch = [h["seconds"] for h in history]
    setup = next(
        (line.split(SETUP_LINE, 1)[-1] for line in _log_lines(member) if SETUP_LINE in line and ", precision " in line),
        "",
    )
    return {
        "finished": result.get("status") == "finished",
        "best_val_accuracy": result.get("best_val_accuracy"),
        "best_epoch": result.get("best_epoch"),
        "epochs": len(history),
        "step_s": statistics.median(per_epoch) / progress["batches_per_epoch"] if per_epoch else None,
        "train_s": sum(per_epoch),
        "setup": setup,
    }


def _log_lines(member: MemberFolder) -> list[str]:
    try:
        return member.log.read_text().splitlines()
    except OSError:
        return []
