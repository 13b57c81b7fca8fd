"""The parts that look at the GPU itself: the CUDA tests, a training step with no host sync, and the bench."""

import xml.etree.ElementTree as ET
from typing import Any

import torch

from videns.bench.profiles import PROFILES
from videns.bench.run import BenchConfig, run_bench
from videns.bench.training import NUM_CLASSES, make_train_step, random_batch
from videns.gpu_check.runner import CheckContext, PartFailed, Skip
from videns.models.temporal import TemporalAttentionClassifier

NO_CUDA = "no CUDA device visible"
SYNC_FREE_BATCH = 48  # the reference recipe's batch, at its feature size (1280) and longest item (73 frames)
SYNC_FREE_CHECKED_STEPS = 3


def cuda_tests(ctx: CheckContext) -> dict[str, Any]:
    """``pytest -m cuda`` with its junit XML; on a machine without CUDA every test skips, which is reported."""
    xml = ctx.folder.cuda_tests
    result = ctx.run(
        [*ctx.commands.pytest, "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={xml}"],
        limit_s=240,
        what="pytest -m cuda",
    )
    counts = junit_counts(xml) if xml.exists() else {}
    if result.returncode not in (0, 5) or counts.get("failures") or counts.get("errors"):
        raise PartFailed(
            f"pytest -m cuda exited {result.returncode}: {counts.get('failed', [])}",
            {**counts, "output_tail": result.stdout[-3000:]},
        )
    if not counts.get("tests") or counts["skipped"] == counts["tests"]:
        raise Skip(
            f"all {counts.get('tests', 0)} CUDA tests skipped: {NO_CUDA}"
            if not ctx.cuda
            else f"all {counts.get('tests', 0)} CUDA tests skipped on a CUDA machine"
        )
    return counts


def junit_counts(path) -> dict[str, Any]:
    """Tests, failures, errors and skips of a junit XML, with the failing tests' names and first lines."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            first_line = (problem.get("message") or "").splitlines()[:1]
            failed.append(f"{case.get('name')}: {first_line[0][:200] if first_line else ''}")
    return {
        **counts,
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": failed,
    }


def sync_free_step(ctx: CheckContext) -> dict[str, Any]:
    """The full-size model's training step under ``set_sync_debug_mode("error")``: any host sync raises."""
    if not ctx.cuda:
        raise Skip(f"{NO_CUDA}: host syncs exist only on a GPU")
    profile, device = PROFILES["quick"], torch.device("cuda")
    variable = torch.randint(1, profile.max_frames + 1, (SYNC_FREE_BATCH,), generator=torch.Generator().manual_seed(0))
    found: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        for lengths_name, lengths in (("equal", None), ("variable", variable)):
            found[f"{precision}_{lengths_name}"] = _sync_free(profile, device, precision, lengths)
    if any(v != "no host sync" for v in found.values()):
        raise PartFailed(
            "a training step waits for the GPU: "
            + "; ".join(f"{k}: {v}" for k, v in found.items() if v != "no host sync"),
            found,
        )
    return {"steps_checked_each": SYNC_FREE_CHECKED_STEPS, **found}


def _sync_free(profile, device: torch.device, precision: str, lengths: torch.Tensor | None) -> str:
    torch.manual_seed(0)
    model = TemporalAttentionClassifier(profile.feature_dim, NUM_CLASSES, **profile.full_model).to(device)
    batch = random_batch(SYNC_FREE_BATCH, profile.max_frames, profile.feature_dim, lengths=lengths)
    batch = (batch[0].pin_memory(), batch[1], batch[2].pin_memory())
    step = make_train_step(
        model, batch, device=device, fused=True, autocast_dtype=torch.bfloat16 if precision == "bf16" else None
    )
    step()  # the first step creates cuDNN handles, workspaces and the optimizer's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(SYNC_FREE_CHECKED_STEPS):
            step()
        return "no host sync"
    except RuntimeError as err:
        return " ".join(str(err).split())[:200]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


def bench(ctx: CheckContext) -> dict[str, Any]:
    """The bench's CUDA section (quick profile): the full-size model's steps, memory, slice fit and epoch ratio."""
    if not ctx.cuda:
        raise Skip(f"{NO_CUDA}: the bench's CUDA section measures a GPU")
    result = run_bench(BenchConfig(out=ctx.folder.bench, quick=True, sections=["cuda"], work_dir=ctx.work / "bench"))
    return bench_figures(result["cuda"])


def bench_figures(cuda: dict[str, Any]) -> dict[str, Any]:
    """The figures the summary shows, from the bench's CUDA section."""
    steps, fit, training = cuda["full_model_steps"], cuda["mig_fit"], cuda["training"]
    figures: dict[str, Any] = {"device_name": cuda["device_name"], "workload": steps["workload"]}
    for precision in ("fp32", "bf16"):
        figures[precision] = {
            "step_s": steps[precision]["median_s"],
            "peak_allocated_gb": steps[precision]["peak_allocated_bytes"] / 1e9,
            "peak_reserved_gb": steps[precision]["peak_reserved_bytes"] / 1e9,
            "fits_9_8_gb_slice": fit.get(precision, {}).get("fits"),
        }
    figures["bf16_step_ratio"] = steps["bf16_step_ratio"]
    figures["slice_memory_fraction"] = fit["memory_fraction"]
    figures["epoch_time_ratio_bf16"] = training["epoch_time_ratio"]
    figures["best_val_accuracy"] = {
        "ours_bf16": training["ours"]["best_val_accuracy"],
        "reference_fp32": training["reference"]["best_val_accuracy"],
    }
    if not fit["fits"]:
        raise PartFailed(
            f"the full-size model at batch {steps['workload']['batch']} does not fit a 9.8 GB slice in bf16", figures
        )
    return figures
