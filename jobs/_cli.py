"""What every entry point shares: user errors become one line and exit code 2."""

import sys
from contextlib import contextmanager

from videns.errors import UserError

USER_ERROR_EXIT = 2


@contextmanager
def user_errors_as_one_line(prog: str):
    """Print a UserError as ``prog: error: <message>`` and exit 2; let bugs keep their traceback."""
    try:
        yield
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
