"""TensorBoard events of a member stopped and resumed read back, with TensorBoard's own reader, exactly
as an uninterrupted member's: one value per tag and step, the same steps, the same values."""

import json
import shutil
import signal
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tests.conftest import run_module, start_module, tiny_member_args  # noqa: E402
from tests.test_resume import wait_for_checkpoint  # noqa: E402
from videns.folders import MemberFolder  # noqa: E402
from videns.tensorboard import SCALARS  # noqa: E402

INTERRUPTED = 128 + signal.SIGTERM
BATCHES_PER_EPOCH = 18
EPOCH_END_STEPS = [18, 36, 54]
TIMED_TAGS = {"epoch_seconds"}  # wall time: only its steps can match


def member_args(root: Path, out: Path, *extra: str) -> list[str]:
    return tiny_member_args(
        root, out, "--trainer.batch_size", "8", "--trainer.max_epochs", "3", "--trainer.tensorboard", "true", *extra
    )


def scalars(member: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(MemberFolder(member).tensorboard))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_scalars(member: Path, reference: Path) -> None:
    got, expected = scalars(member), scalars(reference)
    assert sorted(got) == sorted(expected) == sorted(SCALARS)
    for tag in SCALARS:
        steps = [step for step, _ in got[tag]]
        assert steps == [step for step, _ in expected[tag]] == EPOCH_END_STEPS, (tag, steps)
        if tag not in TIMED_TAGS:
            assert got[tag] == expected[tag], tag


def finish(root: Path, out: Path, *extra: str) -> None:
    result = run_module("jobs.train", member_args(root, out, *extra), timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tb-reference") / "member"
    finish(demo_root, out, "--checkpoint.every_minutes", "0")
    return out


def test_an_uninterrupted_member_writes_every_scalar_once_per_epoch(reference):
    found = scalars(reference)
    history = [json.loads(line) for line in (reference / "history.jsonl").read_text().splitlines()]
    assert [value for _, value in found["val/accuracy"]] == pytest.approx([h["val_accuracy"] for h in history])
    assert all(value > 0 for _, value in found["epoch_seconds"])


@pytest.mark.slow
def test_sigterm_then_resume_continues_the_events_without_duplicates_or_gaps(demo_root, tmp_path, reference):
    out = tmp_path / "member"
    proc = start_module("jobs.train", member_args(demo_root, out, "--checkpoint.every_steps", "1"))
    wait_for_checkpoint(out, min_step=BATCHES_PER_EPOCH + 2)  # epoch 1's scalars are written
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, output
    assert [step for step, _ in scalars(out)["loss/val"]][-1] < EPOCH_END_STEPS[-1], "stopped before the end"
    finish(demo_root, out)
    assert_same_scalars(out, reference)


@pytest.mark.slow
def test_sigkill_between_periodic_saves_then_resume_replays_without_duplicates(demo_root, tmp_path, reference):
    out = tmp_path / "member"
    proc = start_module("jobs.train", member_args(demo_root, out, "--checkpoint.every_steps", "5"))
    wait_for_checkpoint(out, min_step=BATCHES_PER_EPOCH + 2)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert BATCHES_PER_EPOCH < saved < EPOCH_END_STEPS[-1] and not (out / "result.json").exists(), (
        "the kill must land after a checkpoint and before the run ended"
    )
    finish(demo_root, out, "--checkpoint.every_steps", "5")
    assert_same_scalars(out, reference)


@pytest.mark.slow
def test_scalars_written_after_the_checkpoint_resumed_from_are_purged(demo_root, tmp_path, reference):
    """What a SIGKILL between an epoch's scalars and the commit of its checkpoint leaves, made exactly:
    the events hold step 36, the newest checkpoint is step 20. The resumed run writes step 36 again;
    TensorBoard keeps only the new one because the writer purges from step 21 (its reader alone does not
    drop a repeated step that is not older than the last one it saw)."""
    out = tmp_path / "member"
    finish(demo_root, out, "--trainer.max_epochs", "2", "--checkpoint.every_steps", "5", "--checkpoint.keep", "100")
    for folder in (out / "checkpoints").glob("step-*"):
        if int(folder.name.split("-")[1]) > 20:
            shutil.rmtree(folder)
    (out / "result.json").unlink()
    assert [step for step, _ in scalars(out)["loss/val"]] == EPOCH_END_STEPS[:2]
    finish(demo_root, out, "--checkpoint.every_steps", "5")
    assert_same_scalars(out, reference)


def test_tensorboard_requested_but_not_installed_is_one_config_error(demo_root, tmp_path, monkeypatch, capsys):
    import jobs.train
    import videns.training.config

    monkeypatch.setattr(videns.training.config, "tensorboard_installed", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        jobs.train.main(member_args(demo_root, tmp_path / "member"))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "trainer.tensorboard needs the tensorboard package" in lines[0], lines
    assert not (tmp_path / "member").exists()
