"""``summary.md``: one table row per part, the figures a person looks for first."""

from collections.abc import Callable
from typing import Any

Headline = Callable[[dict[str, Any]], str]


def format_summary(record: dict[str, Any]) -> str:
    env, parts = record["environment"], record["parts"]
    counts = {
        status: sum(p["status"] == status for p in parts.values())
        for status in ("passed", "failed", "skipped", "not run")
    }
    lines = [
        f"# gpu-check on {env['device']}",
        "",
        f"{record['created']}; torch {env['torch']}, CUDA {env['torch_cuda'] or 'none'}"
        + (f", driver {env['driver']}, MIG {env['mig_mode']}" if env.get("driver") else "")
        + ".",
        ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        + f" in {record['total_s']:.0f} s (budget {record['budget_s']:.0f} s).",
        "",
        "| part | status | seconds | what it found |",
        "| --- | --- | ---: | --- |",
    ]
    for name, part in parts.items():
        found = HEADLINES[name](part) if part["status"] == "passed" else part.get("note", "")
        if part["status"] == "failed" and name in HEADLINES:
            found = f"{part.get('note', '')}. {_safely(HEADLINES[name], part)}".strip(". ")
        lines.append(f"| {name} | {part['status']} | {part['seconds']:.0f} | {found.replace('|', '/')} |")
    lines += [
        "",
        "Every figure is in gpu_check.json"
        + (
            "; the bench's own JSON is bench-cuda.json."
            if parts.get("bench", {}).get("status") in ("passed", "failed")
            else "."
        ),
    ]
    return "\n".join(lines) + "\n"


def _safely(headline: Headline, part: dict[str, Any]) -> str:
    try:
        return headline(part)
    except (KeyError, TypeError, ValueError):  # a failed part may lack the figures its headline reads
        return ""


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.1f} ms"


def _cuda_tests(p: dict[str, Any]) -> str:
    return f"{p['passed']} passed, {p['failures'] + p['errors']} failed, {p['skipped']} skipped"


def _sync_free(p: dict[str, Any]) -> str:
    cases = [k for k, v in p.items() if isinstance(v, str) and v == "no host sync"]
    return f"no host sync in {p['steps_checked_each']} steps each: {', '.join(cases)}"


def _bench(p: dict[str, Any]) -> str:
    fp32, bf16 = p["fp32"], p["bf16"]
    return (
        f"full-size step at batch {p['workload']['batch']}: fp32 {_ms(fp32['step_s'])}, bf16 {_ms(bf16['step_s'])} "
        f"(ratio {p['bf16_step_ratio']:.2f}); peak reserved fp32 {fp32['peak_reserved_gb']:.2f} GB, "
        f"bf16 {bf16['peak_reserved_gb']:.2f} GB; fits 9.8 GB: fp32 {fp32['fits_9_8_gb_slice']}, "
        f"bf16 {bf16['fits_9_8_gb_slice']}; epoch ratio (bf16 vs reference) {p['epoch_time_ratio_bf16']:.2f}"
    )


def _demo_bf16(p: dict[str, Any]) -> str:
    fp32, bf16 = p["fp32"], p["bf16"]
    return (
        f"val accuracy bf16 {bf16['best_val_accuracy']:.4f}, fp32 {fp32['best_val_accuracy']:.4f}; "
        f"step bf16 {_ms(bf16['step_s'])}, fp32 {_ms(fp32['step_s'])}; {bf16['setup']}"
    )


def _resume(p: dict[str, Any]) -> str:
    epochs = p["epochs"]
    text = (
        f"SIGTERM at step {p['sigterm_at_step']}, saved at {p['stopped_at_step']}, {p['replayed_steps']} replayed; "
        f"final weights max abs diff {p['weights_max_abs_diff']:.3g}, optimizer {p['optimizer_max_abs_diff']:.3g}; "
        f"epochs {epochs[0]}..{epochs[-1]} " + ("without a gap" if p["history_continues"] else "WITH A GAP OR REPEAT")
    )
    if "run_to_run_max_abs_diff" in p:
        text += f"; two uninterrupted runs differ by {p['run_to_run_max_abs_diff']:.3g}"
    return text


def _four_members(p: dict[str, Any]) -> str:
    members = list(p["members"].values())
    steps = [m["step_s"] for m in members if m.get("step_s") is not None]
    peaks = [m["gpu_max_allocated_gb"] for m in members if m.get("gpu_max_allocated_gb") is not None]
    first = members[0] if members else {}
    text = f"{p['most_at_once']} at once; step {_ms(min(steps))} to {_ms(max(steps))}" if steps else "no steps"
    if peaks:
        text += f"; peak allocated {max(peaks):.2f} GiB; {first.get('gpu_name')}, MIG {first.get('mig_instance')}"
    return text + f"; devices {sorted({str(m.get('device')) for m in members})}"


HEADLINES: dict[str, Headline] = {
    "cuda_tests": _cuda_tests,
    "sync_free_step": _sync_free,
    "bench": _bench,
    "demo_bf16": _demo_bf16,
    "resume": _resume,
    "four_members": _four_members,
}
