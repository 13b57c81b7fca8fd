"""What every entry point shares: user errors become one line and exit code 2."""

import sys
import traceback
from contextlib import contextmanager

from videns.errors import UserError

USER_ERROR_EXIT = 2


@contextmanager
def user_errors_as_one_line(prog: str):
    """Print a UserError as ``prog: error: <message>`` and exit 2; let bugs keep their traceback."""
    try:
        yield
    except UserError as err:
        # The frames the error came through hold the DataLoaders: cleared now, their workers
        # shut down. Left to the exit, the workers ignore the SIGTERM it sends and it waits forever.
        traceback.clear_frames(err.__traceback__)
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
