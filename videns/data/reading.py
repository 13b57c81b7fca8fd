"""One mechanism for every read of a data file: whatever the reader raises becomes one DataError line.

h5py reports a damaged superblock, a truncated file or a chunk that will not
inflate as OSError, KeyError, RuntimeError or ValueError; numpy a dataset of the
wrong type as TypeError; pyarrow and the csv module their own. Each open and each
read of a data file happens inside :func:`reading`, which turns those into a
:class:`DataError` naming the file, the dataset or key, and what failed. Anything
else (a bug in our code) keeps its type and its traceback.
"""

import csv
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from videns.errors import DataError

# What readers raise for a damaged or unreadable file (UnicodeDecodeError is a ValueError).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    KeyError,
    IndexError,
    RuntimeError,
    ValueError,
    TypeError,
    EOFError,
    csv.Error,
    zlib.error,
)


@contextmanager
def reading(path: Path | str, key: str | None = None, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Raise a read failure inside the block as ``DataError("<path>: <key>: cannot read (<why>)")``.

    Without ``key`` the block opens the file: ``"<path>: cannot open (<why>)"``.
    ``also`` adds a reader's own exception types (pyarrow's ArrowException).
    """
    try:
        yield
    except DataError:
        raise
    except (*READ_ERRORS, *also) as err:
        where = f"{path}: {key}: cannot read" if key else f"{path}: cannot open"
        raise DataError(f"{where} ({describe(err)})") from err


def describe(err: BaseException) -> str:
    """What went wrong, on one line, without Python's ``[Errno N]`` prefix."""
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])  # str(KeyError) quotes its message
    elif isinstance(err, OSError) and err.errno is not None and err.strerror:
        text = err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())
