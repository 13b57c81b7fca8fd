"""Command lines, strictly: no abbreviated flags, an unknown flag named with the closest known one, and a parse
error blamed on the command line or on the config file, whichever is at fault.

argparse accepts any unambiguous prefix of a flag, so ``--trainer.max_epoch 3``
silently meant ``--trainer.max_epochs 3``. Every entry point builds its parser
with :func:`strict_parser` and parses with :func:`parse_strictly`, which turns a
parse failure into one :class:`ConfigError` line.
"""

import argparse
import difflib
import re
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ActionYesNo, ArgumentParser, Namespace

from videns.errors import ConfigError

CONFIG_FLAG = "--config"
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$", re.IGNORECASE)


def strict_parser(**kwargs: Any) -> ArgumentParser:
    """A jsonargparse parser that takes only whole flag names and raises instead of exiting on an error."""
    return ArgumentParser(**{"exit_on_error": False, **kwargs, "allow_abbrev": False})


def parse_strictly(parser: ArgumentParser, args: Sequence[str], **kwargs: Any) -> Namespace:
    """``parser.parse_args(args, **kwargs)``; a failure is one ConfigError line that names its culprit."""
    args = list(args)
    try:
        return parser.parse_args(args, **kwargs)
    except ArgumentError as err:
        raise ConfigError(explain_parse_error(parser, args, err)) from None


DefaultsResolver = Callable[[argparse.Namespace, Namespace], None]


def parse_with_resolved_defaults(
    parser: ArgumentParser, args: Sequence[str], deciding: Sequence[str] = (), resolve: DefaultsResolver | None = None
) -> Namespace:
    """``args`` parsed on top of defaults that depend on what ``args`` say, such as a site profile named by
    ``--site`` or a run folder's own config named by ``--run_dir``.

    Step 1 reads only the ``deciding`` options, with argparse's own ``parse_known_args`` over
    copies of their actions (jsonargparse cannot read part of a command line, and a model's
    ``--model.init_args.*`` cannot be read before its class is known). ``resolve(decided, base)``
    then writes the defaults that follow from them into ``base``, the parser's own defaults.
    Step 2 parses the whole command line once, on top of ``base``, so whatever the user typed
    wins over a resolved default, exactly as it wins over a plain one.
    """
    base = parser.get_defaults()
    if resolve is not None:
        resolve(read_deciding_options(parser, args, deciding), base)
    return parse_strictly(parser, args, namespace=base)


def read_deciding_options(parser: ArgumentParser, args: Sequence[str], dests: Sequence[str]) -> argparse.Namespace:
    """The raw values of the options with these ``dests`` (None where not given; a list for ``--config``)."""
    reader = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for action in parser._actions:  # argparse's own list
        if action.dest not in dests or not action.option_strings:
            continue
        if action.nargs == 0:
            reader.add_argument(*action.option_strings, dest=action.dest, action="store_true", default=None)
        elif isinstance(action, ActionYesNo):  # --flag [VALUE] and --no_flag
            yes = [o for o in action.option_strings if not o.startswith("--no_")]
            no = [o for o in action.option_strings if o.startswith("--no_")]
            reader.add_argument(*yes, dest=action.dest, nargs="?", const="true", default=None)
            if no:
                reader.add_argument(*no, dest=action.dest, action="store_const", const="false")
        else:
            repeated = action.dest == "config"
            reader.add_argument(
                *action.option_strings,
                dest=action.dest,
                nargs=action.nargs,
                action="append" if repeated else "store",
                default=None,
            )
    decided, _ = reader.parse_known_args(list(args))
    return decided


def is_true(value: str | bool | None) -> bool:
    """A deciding option's raw value as a bool (``--flag``, ``--flag true``, ``--flag=yes``)."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "yes", "1"))


def flag_given(args: Sequence[str], flag: str) -> bool:
    """Whether ``flag`` itself (``--flag V`` or ``--flag=V``) is on the command line, not only in a config file."""
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def explain_parse_error(parser: ArgumentParser, args: list[str], err: ArgumentError) -> str:
    message = " ".join(str(err).split())
    unrecognized = _UNRECOGNIZED.match(message)
    if unrecognized:
        return (
            f"command line: unrecognized argument(s) {unrecognized.group(1)}{_closest(parser, unrecognized.group(1))}"
        )
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
    pairs = [
        (flag, match[0])
        for flag in (t.split("=", 1)[0] for t in unrecognized.split() if t.startswith("-"))
        if (match := difflib.get_close_matches(flag, known, n=1, cutoff=0.6))
    ]
    if not pairs:
        return ""
    if len(pairs) == 1:
        return f" (did you mean {pairs[0][1]}?)"
    return " (did you mean " + ", ".join(f"{known_flag} for {flag}" for flag, known_flag in pairs) + "?)"
