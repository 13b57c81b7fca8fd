"""Command lines, strictly: no abbreviated flags, an unknown flag named with the closest known one, and a parse
error blamed on the command line or on the config file, whichever is at fault.

argparse accepts any unambiguous prefix of a flag, so ``--trainer.max_epoch 3``
silently meant ``--trainer.max_epochs 3``. Every entry point builds its parser
with :func:`strict_parser` and parses with :func:`parse_strictly`, which turns a
parse failure into one :class:`ConfigError` line.
"""

import difflib
import re
from argparse import ArgumentError
from typing import Any, Sequence

from jsonargparse import ArgumentParser, Namespace

from videns.errors import ConfigError

CONFIG_FLAG = "--config"
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$", re.IGNORECASE)


def strict_parser(**kwargs: Any) -> ArgumentParser:
    """A jsonargparse parser that takes only whole flag names and raises instead of exiting on an error."""
    return ArgumentParser(**{"exit_on_error": False, **kwargs, "allow_abbrev": False})


def parse_strictly(parser: ArgumentParser, args: Sequence[str]) -> Namespace:
    """``parser.parse_args(args)``; a failure is one ConfigError line that names its culprit."""
    args = list(args)
    try:
        return parser.parse_args(args)
    except ArgumentError as err:
        raise ConfigError(explain_parse_error(parser, args, err)) from None


def explain_parse_error(parser: ArgumentParser, args: list[str], err: ArgumentError) -> str:
    message = " ".join(str(err).split())
    unrecognized = _UNRECOGNIZED.match(message)
    if unrecognized:
        return f"command line: unrecognized argument(s) {unrecognized.group(1)}{_closest(parser, unrecognized.group(1))}"
    faulty = [path for path in config_files(args) if not _parses(parser, [CONFIG_FLAG, path])]
    return f"{', '.join(faulty)}: {message}" if faulty else f"command line: {message}"


def config_files(args: Sequence[str]) -> list[str]:
    """The files given to ``--config``, in order."""
    files = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == CONFIG_FLAG]
    return files + [arg.split("=", 1)[1] for arg in args if arg.startswith(CONFIG_FLAG + "=")]


def _parses(parser: ArgumentParser, args: list[str]) -> bool:
    try:
        parser.parse_args(args)
    except ArgumentError:
        return False
    return True


def _closest(parser: ArgumentParser, unrecognized: str) -> str:
    known = [flag for flag in parser._option_string_actions if flag.startswith("--")]  # argparse's own index
    pairs = [(flag, match[0]) for flag in (t.split("=", 1)[0] for t in unrecognized.split() if t.startswith("-"))
             if (match := difflib.get_close_matches(flag, known, n=1, cutoff=0.6))]
    if not pairs:
        return ""
    if len(pairs) == 1:
        return f" (did you mean {pairs[0][1]}?)"
    return " (did you mean " + ", ".join(f"{known_flag} for {flag}" for flag, known_flag in pairs) + "?)"
