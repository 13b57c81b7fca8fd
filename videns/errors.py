"""Errors that mean "the user gave us something wrong", as opposed to bugs.

Entry points catch :class:`UserError` and print its message as one line, with
no traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input that the user can fix; the message names file, key and problem."""


class DataError(UserError):
    """An input data file is missing, malformed or inconsistent."""


class ConfigError(UserError):
    """A configuration value, or a combination of values, is invalid."""


class CheckpointError(UserError):
    """A checkpoint cannot be used (config mismatch, nothing valid on disk)."""
