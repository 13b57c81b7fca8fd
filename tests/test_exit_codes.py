"""Every exit code is defined once, in videns.errors.ExitCode, with a line saying when a process ends with it."""

import signal

from videns.errors import ExitCode


def test_no_two_exit_codes_share_a_value():
    assert len(ExitCode.__members__) == len(ExitCode)  # an IntEnum turns a repeated value into a silent alias


def test_each_exit_code_says_in_one_line_when_a_process_ends_with_it():
    for code in ExitCode:
        assert code.description.strip() and "\n" not in code.description, code.name


def test_the_signal_codes_are_what_a_shell_reports():
    assert ExitCode.CTRL_C == 128 + signal.SIGINT == 130
    assert ExitCode.STOPPED == 128 + signal.SIGTERM == 143
