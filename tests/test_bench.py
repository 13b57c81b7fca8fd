"""jobs.bench in its tiny profile on CPU: the JSON's shape, ratios that name their workload, the table.

No assertion here is about speed: the tiny profile's figures mean nothing.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs import bench
from tests.support.slurm_cluster import REPO_ROOT, ensure_cluster
from videns.bench.baseline import ReferenceDataset
from videns.bench.report import WORKLOAD_KEYS, collect_ratios, format_table
from videns.data import layout

SECTION_KEYS = {
    "loader": ("reference", "ours", "ours_no_preload", "loader_speedup", "workload"),
    "checkpoint": (
        "ours_save",
        "ours_save_durable",
        "torch_save",
        "torch_save_fsync",
        "ours_load",
        "plain_load",
        "checkpoint_save_ratio",
        "checkpoint_load_ratio",
        "stall",
        "workload",
    ),
    "ensemble": ("no_tta", "tta", "reference_member_passes", "ensemble_speedup", "workload"),
}
TRAINING_KEYS = ("ours", "reference", "epoch_time_ratio", "equal_quality", "workload")
EXPECTED_RATIOS = {
    "loader_speedup",
    "epoch_time_ratio",
    "step_time_ratio",
    "unpacked_lstm_step_ratio",
    "checkpoint_save_ratio",
    "checkpoint_save_returns_ratio",
    "checkpoint_save_durable_ratio",
    "checkpoint_save_ratio_vs_plain_torch_save",
    "checkpoint_load_ratio",
    "ensemble_speedup",
    "ecg_epoch_time_ratio",
    "ecg_long_step_time_ratio",
}
ECG_MODELS = {"ecg": ("cnn1d_gru", "cnn2d"), "ecg_long": ("cnn1d_gru",)}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny bench run: (result JSON, printed table)."""
    root = tmp_path_factory.mktemp("bench")
    out = root / "bench.json"
    threads = torch.get_num_threads()
    try:
        code = bench.main(
            ["--tiny", "--device", "cpu", "--threads", "1", "--out", str(out), "--work_dir", str(root / "work")]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return json.loads(out.read_text())


def test_result_has_every_section_with_both_datasets(bench_run):
    assert bench_run["schema"] == "videns.bench/1"
    assert set(bench_run["data"]) == {"fixed", "mixed"}
    assert bench_run["data"]["fixed"]["train_lengths"]["min"] == bench_run["data"]["fixed"]["max_frames"]
    for section, keys in SECTION_KEYS.items():
        sections = bench_run[section].values() if section == "loader" else [bench_run[section]]
        for part in sections:
            assert set(keys) <= set(part), f"{section}: missing {set(keys) - set(part)}"
    assert set(bench_run["loader"]) == {"fixed", "mixed"}
    for name in ("fixed", "mixed"):
        assert set(TRAINING_KEYS) | {"input_bound"} <= set(bench_run["training"][name])
        for run in ("ours", "reference"):
            epochs = bench_run["training"][name][run]["epochs"]
            assert len(epochs) == bench_run["profile"]["epochs"]
            assert all(0.0 <= e["val_accuracy"] <= 1.0 for e in epochs)
    assert {"ours_step", "reference_step", "step_time_ratio"} <= set(bench_run["training"]["full_model_steps"])
    # CPU kernels' ratios differ from one CPU to the next: each result names the one it ran on.
    assert bench_run["host"]["cpu_model"] not in ("", "unknown") and bench_run["host"]["cpu_capability"]


@pytest.mark.parametrize(
    "shape, key, steps, real_steps, classes",
    [("ecg", "ecg_epoch_time_ratio", 192, 187, 5), ("ecg_long", "ecg_long_step_time_ratio", 427, 427, 6)],
)
def test_ecg_section_times_the_heartbeat_models_against_the_always_packed_reference(
    bench_run, shape, key, steps, real_steps, classes
):
    """MIT-BIH's padded beats for both models; a public set's 427-step series, at their own length, GRU steps only."""
    ecg = bench_run[shape]
    assert (ecg["data"]["steps"], ecg["data"]["real_steps"], ecg["data"]["classes"]) == (steps, real_steps, classes)
    first_item, _ = ReferenceDataset(layout.split_path(ecg["data"]["root"], "train"))[0]
    assert ecg["data"]["feature_dim"] == 1 and tuple(first_item.shape) == (real_steps, 1)  # as converted
    for name in ECG_MODELS[shape]:
        part = ecg[name]
        assert {"steps", key, "workload"} <= set(part)
        assert {"ours", "reference", "step_time_ratio"} <= set(part["steps"])
        if shape == "ecg_long":
            assert part[key] == part["steps"]["step_time_ratio"] and "ours" not in part
            continue
        assert {"ours", "reference", "equal_quality"} <= set(part)
        for loop in ("ours", "reference"):
            assert len(part[loop]["epochs"]) == 2 and 0.0 <= part[loop]["best_val_accuracy"] <= 1.0
        assert part["workload"]["recipe"] == f"ecg_{name}.yaml"
    entries = [r for r in bench_run["ratios"] if r["key"] == key]
    targets = {"ecg": ["<= 0.75", "<= 1.0"], "ecg_long": ["<= 0.5"]}[shape]  # per model, run on CPU
    assert [r["target"] for r in entries] == targets
    assert [name for name in ECG_MODELS[shape] if name in entries[0]["definition"]] == ["cnn1d_gru"]


def test_ecg_reference_packs_and_otherwise_computes_what_ours_does():
    """The reference differs from ours only in how the GRU runs: same weights, same logits."""
    from videns.bench.ecg import AlwaysPackedCNN1DGRU
    from videns.models.cnn1d_gru import CNN1DGRUClassifier

    torch.manual_seed(0)
    ours = CNN1DGRUClassifier(1, 5, hidden_dim=8, gru_hidden=8, num_blocks=1).eval()
    reference = AlwaysPackedCNN1DGRU(1, 5, hidden_dim=8, gru_hidden=8, num_blocks=1).eval()
    reference.load_state_dict(ours.state_dict())
    packed_inputs = []
    reference.gru.register_forward_pre_hook(lambda _m, args: packed_inputs.append(type(args[0]).__name__))
    x, lengths = torch.randn(3, 192, 1), torch.tensor([187, 187, 150])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, lengths), reference(x, lengths), atol=1e-5, rtol=0)
    assert packed_inputs == ["PackedSequence"]


def test_cuda_section_says_why_it_was_not_measured(bench_run):
    cuda = bench_run["cuda"]
    assert cuda["available"] == torch.cuda.is_available()
    assert "not measured here" in cuda["note"]


def test_cuda_figures_are_reported_when_present(bench_run):
    """The report's CUDA branch, fed a CUDA section shaped as measure_cuda writes it (no GPU needed)."""
    step = {"median_s": 0.1, "peak_allocated_bytes": 4e9, "peak_reserved_bytes": 5e9}
    workload = {"model": "m", "batch": 48, "workers": 0, "device": "cuda (test)"}
    steps = {"workload": workload, "fp32": step, "bf16": step, "bf16_step_ratio": 1.0}
    fit = {"workload": workload, "bf16": {"fits": True}, "fp32": {"fits": False, "error": "oom"}, "fits": True}
    result = {
        **bench_run,
        "cuda": {
            "available": True,
            "full_model_steps": steps,
            "mig_fit": fit,
            "training": bench_run["training"]["fixed"],
        },
    }
    result["ratios"] = collect_ratios(result)
    cuda_ratios = [r for r in result["ratios"] if r["workload"]["device"] == "cuda (test)"]
    assert [r["key"] for r in cuda_ratios] == ["bf16_step_ratio"]
    assert sum(r["key"] == "epoch_time_ratio" for r in result["ratios"]) == 3
    table = format_table(result)
    assert "cuda full-size bf16" in table and "fits a 9.8 GB slice" in table


def test_every_ratio_names_its_workload(bench_run):
    ratios = bench_run["ratios"]
    assert EXPECTED_RATIOS <= {r["key"] for r in ratios}
    for entry in ratios:
        assert isinstance(entry["value"], float) and not math.isinf(entry["value"])
        assert entry["definition"]
        for key in WORKLOAD_KEYS:
            assert entry["workload"].get(key) not in (None, ""), f"{entry['key']}: workload lacks {key}"
        if entry["target"] is not None and not math.isnan(entry["value"]):
            assert isinstance(entry["met"], bool)


def test_printed_table_lists_every_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        assert (
            bench.main(
                ["--tiny", "--device", "cpu", "--threads", "1", "--out", str(out), "--sections", "loader", "checkpoint"]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert "training" not in result and "ensemble" not in result
    for entry in result["ratios"]:
        assert f"| {entry['key']} |" in printed


def test_conflicting_profiles_are_one_line_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", "--tiny", "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jobs.bench: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_checkpoint_stall_is_measured_against_the_same_steps(bench_run):
    stall = bench_run["checkpoint"]["stall"]
    assert len(stall["rounds"]) == bench_run["profile"]["checkpoint_repeats"]
    # Each stall is a round's (save + steps until the commit is on disk) minus the same steps alone.
    for r in stall["rounds"]:
        assert r["stall_s"] == pytest.approx(r["with_save_s"] - r["alone_s"])
    assert bench_run["checkpoint"]["checkpoint_save_ratio"] == pytest.approx(
        stall["ours_median_s"] / bench_run["checkpoint"]["torch_save_fsync"]["median_s"]
    )


def test_work_dir_data_is_reused(bench_run, tmp_path):
    # The second run in the same work_dir reuses the generated files (same profile, same marker).
    work = Path(bench_run["config"]["work_dir"])
    fixed = work / "data" / "tiny-fixed" / "train_features_multiscale.h5"
    before = fixed.stat().st_mtime_ns
    threads = torch.get_num_threads()
    try:
        assert (
            bench.main(
                [
                    "--tiny",
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                    "--out",
                    str(tmp_path / "b.json"),
                    "--work_dir",
                    str(work),
                    "--sections",
                    "loader",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    assert fixed.stat().st_mtime_ns == before


@pytest.mark.slurm
@pytest.mark.slow
def test_submitted_bench_runs_inside_a_slurm_job_and_prints_its_table(tmp_path):
    ensure_cluster(user_signal=False)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.bench",
            "--tiny",
            "--device",
            "cpu",
            "--sections",
            "loader",
            "--submit",
            "--wait",
            "--site",
            "local",
            "--slurm.time_min",
            "10",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = re.search(r"bench job (\S+) submitted", proc.stdout).group(1)
    result = json.loads(out.read_text())
    assert result["host"]["slurm_job_id"] == job_id  # measured in the job, not in the submitting process
    assert result["host"]["torch_threads"] == 1  # the site's cpus_per_task, not the node's cores
    assert "| loader_speedup |" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--tiny", "--device", "cuda", "--out", str(tmp_path / "b.json"), "--work_dir", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "device=cuda but no CUDA device is visible" in err
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "w").exists()


def test_submit_without_slurm_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--tiny", "--submit", "--out", str(tmp_path / "b.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no sbatch on PATH" in err
    assert not (tmp_path / "b.json").exists()
