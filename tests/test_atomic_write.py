"""Every file we write replaces the old one whole: a failed or killed write leaves the old file and nothing else."""

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO
from videns.io import WriteFailed, read_json, replacing, write_json_atomically, write_text_atomically


def test_a_failure_inside_the_block_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomically(target, {"version": 1})
    with pytest.raises(RuntimeError, match="renderer broke"), replacing(target) as tmp:
        tmp.write_text('{"version": 2, "half')
        raise RuntimeError("renderer broke")
    assert read_json(target) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_os_error_inside_the_block_is_one_line_naming_the_folder_and_the_file(tmp_path):
    target = tmp_path / "figure.png"
    with pytest.raises(WriteFailed) as failed, replacing(target):
        raise OSError(28, "No space left on device")
    message = str(failed.value)
    assert message.startswith(f"{tmp_path}: cannot write figure.png: No space left on device")
    assert "\n" not in message and failed.value.disk_full
    assert list(tmp_path.iterdir()) == []


def test_the_new_file_replaces_the_old_one_and_nothing_is_left_beside_it(tmp_path):
    target = tmp_path / "sub" / "notes.md"
    write_text_atomically(target, "old\n")
    with replacing(target) as tmp, open(tmp, "w") as f:
        f.write("new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in target.parent.iterdir()] == ["notes.md"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_the_file_gets_the_mode_the_umask_gives_any_new_file(tmp_path, umask, mode):
    """Private run folders rely on the umask (videns.folders.use_private_umask), so the write must follow it."""
    os.umask(umask)
    target = tmp_path / "progress.json"
    write_json_atomically(target, {})
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "predictions.csv"
    write_text_atomically(target, "old\n")
    writer = textwrap.dedent(f"""
        import sys, time
        from videns.io import replacing
        with replacing({str(target)!r}) as tmp, open(tmp, "w") as f:
            f.write("new, half written" * 10000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert target.read_text() == "old\n"
