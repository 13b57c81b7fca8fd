"""Whether a recorded process still runs: gone, alive, or its pid now taken by another process."""

import os
import subprocess
import sys

from videns.io import process_alive, process_start


def test_a_finished_process_is_not_alive():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not process_alive(gone.pid) and process_start(gone.pid) is None


def test_a_running_process_with_its_own_start_time_is_alive():
    assert process_alive(os.getpid(), process_start(os.getpid()))
    assert process_alive(str(os.getpid()))  # as read back from a file


def test_a_pid_that_started_at_another_time_is_another_process():
    """What a reused pid looks like: the pid runs, but not the process that was recorded."""
    assert not process_alive(os.getpid(), process_start(os.getpid()) - 3600)


def test_without_a_comparable_start_time_a_running_pid_counts_as_alive():
    """The safe side: nothing is deleted or taken over from a process that may still be writing."""
    assert process_alive(os.getpid(), None)
    assert process_alive(os.getpid(), "123456")  # a start recorded in clock ticks since boot


def test_a_process_of_another_user_counts_as_alive():
    if os.geteuid() != 0:
        assert process_alive(1)  # init: we may not signal it, yet it runs
        return
    other = subprocess.Popen(["sleep", "30"], user="nobody")
    try:
        assert process_alive(other.pid, process_start(other.pid))
    finally:
        other.kill()
        other.wait()


def test_nonsense_pids_are_not_alive():
    assert not any(process_alive(pid) for pid in (0, -1, None, "x"))
