"""``make gpu-check`` runs on a machine without CUDA too: its CUDA parts skip with one line, the rest runs for real.

The CPU run is what keeps the command from going stale between GPU loans, and
it holds the CPU's own claims: bf16 autocast on the CPU learns the demo within
2 points of fp32, and a SIGTERM-and-resume is bit-identical.
"""

import json

import pytest
import torch

from tests.conftest import run_module
from videns.gpu_check.device_parts import junit_counts
from videns.gpu_check.member_parts import most_at_once
from videns.gpu_check.summary import format_summary

CUDA_ONLY = ("sync_free_step", "bench")


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU run of the check is CI's")
    out = tmp_path_factory.mktemp("gpu-check")
    result = run_module("jobs.gpu_check", ["--out", str(out)])
    return result, out, json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow
def test_without_cuda_the_cuda_parts_skip_with_one_line_and_the_rest_passes(cpu_check):
    result, out, record = cpu_check
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parts = record["parts"]
    assert list(parts) == ["cuda_tests", "sync_free_step", "bench", "demo_bf16", "resume", "four_members"]
    for name in (*CUDA_ONLY, "cuda_tests"):
        assert parts[name]["status"] == "skipped" and "no CUDA device visible" in parts[name]["note"]
        assert "\n" not in parts[name]["note"]
    assert {parts[name]["status"] for name in ("demo_bf16", "resume", "four_members")} == {"passed"}
    assert (out / "cuda-tests.xml").is_file() and junit_counts(out / "cuda-tests.xml")["tests"] >= 6
    summary = (out / "summary.md").read_text()
    assert "| resume | passed |" in summary and "| bench | skipped |" in summary


@pytest.mark.slow
def test_a_bf16_demo_member_on_the_cpu_reaches_the_fp32_accuracy_within_2_points(cpu_check):
    part = cpu_check[2]["parts"]["demo_bf16"]
    assert part["bf16"]["setup"].startswith("cpu, precision bf16")
    assert part["bf16"]["best_val_accuracy"] >= part["fp32"]["best_val_accuracy"] - 0.02
    assert part["fp32"]["best_val_accuracy"] >= 0.8  # the demo's own bar


@pytest.mark.slow
def test_the_checks_resume_is_bit_identical_on_the_cpu_with_nothing_replayed(cpu_check):
    part = cpu_check[2]["parts"]["resume"]
    assert part["weights_max_abs_diff"] == 0.0 and part["optimizer_max_abs_diff"] == 0.0
    assert part["replayed_steps"] == 0 and part["restart_causes"] == ["stopped"]
    assert part["history_continues"] and part["train_loss_max_abs_diff"] == 0.0
    assert part["stopped_status"] == "interrupted" and part["stopped_at_step"] >= part["sigterm_at_step"] > 0


@pytest.mark.slow
def test_the_four_members_ran_side_by_side_and_logged_their_device(cpu_check):
    part = cpu_check[2]["parts"]["four_members"]
    assert sorted(part["members"]) == ["42", "43", "44", "45"]
    assert part["most_at_once"] >= 2
    assert all(m["finished"] and m["device"] == "cpu" and m["step_s"] > 0 for m in part["members"].values())


def test_junit_counts_name_the_failing_tests(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="test_a"/><testcase name="test_b"><failure message="assert 1 == 2&#10;more"/>'
        '</testcase><testcase name="test_c"><skipped/></testcase></testsuite></testsuites>'
    )
    counts = junit_counts(xml)
    assert (counts["tests"], counts["passed"], counts["failures"], counts["skipped"]) == (3, 1, 1, 1)
    assert counts["failed"] == ["test_b: assert 1 == 2"]


def test_most_at_once_counts_overlapping_spans():
    assert most_at_once([(0, 10), (1, 5), (3, 11), (10.5, 12)]) == 3
    assert most_at_once([(0, 1), (1, 2)]) == 1  # one ends as the next starts
    assert most_at_once([]) == 0


def test_a_failed_part_keeps_its_note_and_the_figures_it_has_in_the_summary():
    record = {
        "created": "now",
        "budget_s": 450,
        "total_s": 12.0,
        "environment": {"device": "NVIDIA H200", "torch": "2.11", "torch_cuda": "13.0"},
        "parts": {
            "cuda_tests": {
                "status": "failed",
                "seconds": 3.0,
                "note": "pytest -m cuda exited 1",
                "tests": 6,
                "passed": 5,
                "failures": 1,
                "errors": 0,
                "skipped": 0,
            },
            "bench": {"status": "failed", "seconds": 1.0, "note": "ValueError: bad | device"},
            "resume": {"status": "not run", "seconds": 0.0, "note": "the check's time budget was spent"},
        },
    }
    summary = format_summary(record)
    assert "| cuda_tests | failed | 3 | pytest -m cuda exited 1. 5 passed, 1 failed, 0 skipped |" in summary
    assert "| bench | failed | 1 | ValueError: bad / device |" in summary
    assert "| resume | not run | 0 | the check's time budget was spent |" in summary
