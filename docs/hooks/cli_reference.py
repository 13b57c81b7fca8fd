"""MkDocs hook: the CLI reference, generated from the entry points' own parsers at every build.

For each command in ``COMMANDS`` it imports ``jobs.<name>``, calls its module-level
``build_parser()`` and renders ``parser.format_help()`` into ``cli/<name>.md``, with
the module's docstring above it. The exit codes come from ``videns/errors.py``:
``videns.errors.ExitCode``, each code with its own description. Nothing
is copied by hand, so the pages cannot drift from the code.

The modules are imported in a child process (this file, run as a script), with a
fixed terminal width and without the caller's site profile, so the output is the
same on every machine and ``mkdocs serve`` sees code edits at its next rebuild.

Markers in ``cli/index.md`` that this hook fills in: ``<!-- cli:commands -->`` (a
table of the commands) and ``<!-- cli:exit-codes -->`` (the exit codes).
"""

from __future__ import annotations

import html
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

COMMANDS = (
    "launch",
    "train",
    "status",
    "ensemble_eval",
    "predict",
    "sweep",
    "bench",
    "make_data",
    "convert",
    "check_folder",
    "gpu_check",
)
HELP_COLUMNS = 100
PAGE_DIR = "cli"
COMMANDS_MARKER = "<!-- cli:commands -->"
EXIT_CODES_MARKER = "<!-- cli:exit-codes -->"
REPO = Path(__file__).resolve().parents[2]
# Environment variables that would make the defaults shown depend on the machine building the docs.
UNSET_ENV = ("VIDENS_SITE", "VIDENS_ALLOW_UNLOCKED")

_collected: dict | None = None


# ---------------------------------------------------------------- MkDocs events (in the mkdocs process)


def on_config(config):
    global _collected
    _collected = None
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    global _collected
    _collected = _collect_in_child()
    for name, command in _collected["commands"].items():
        src_uri = f"{PAGE_DIR}/{name}.md"
        if files.get_file_from_path(src_uri) is not None:
            _fail(f"docs/{src_uri} exists, but the CLI reference hook generates that page; delete the file")
        files.append(File.generated(config, src_uri, content=command_page(name, command)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != f"{PAGE_DIR}/index.md":
        return markdown
    for marker in (COMMANDS_MARKER, EXIT_CODES_MARKER):
        if marker not in markdown:
            _fail(f"docs/{PAGE_DIR}/index.md lacks the marker {marker} that the CLI reference hook fills in")
    markdown = markdown.replace(COMMANDS_MARKER, commands_table(_collected["commands"]))
    return markdown.replace(EXIT_CODES_MARKER, exit_codes_table(_collected["exit_codes"]))


def _fail(message: str):
    from mkdocs.exceptions import PluginError

    raise PluginError(f"CLI reference: {message}")


def _collect_in_child() -> dict:
    env = {key: value for key, value in os.environ.items() if key not in UNSET_ENV}
    env.update(
        COLUMNS=str(HELP_COLUMNS),
        LINES="50",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        PYTHONDONTWRITEBYTECODE="1",
    )
    done = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        _fail(lines[-1] if lines else f"{__file__} exited {done.returncode}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------- rendering


def command_page(name: str, command: dict) -> str:
    parts = [
        f"# `python -m jobs.{name}`",
        "",
        docstring_markdown(command["doc"]),
        "",
        "## Options",
        "",
        f"The output of `python -m jobs.{name} --help`:",
        "",
        "```text",
        command["help"].rstrip(),
        "```",
        "",
        "## Exit codes",
        "",
        "Every command exits with one of the codes listed in [the CLI reference](index.md#exit-codes).",
        "",
    ]
    return "\n".join(parts)


def commands_table(commands: dict) -> str:
    rows = ["| command | what it does |", "| --- | --- |"]
    for name, command in commands.items():
        rows.append(f"| [`jobs.{name}`]({name}.md) | {_cell(command['summary'])} |")
    return "\n".join(rows)


def exit_codes_table(codes: list[dict]) -> str:
    rows = ["| code | name | meaning |", "| --- | --- | --- |"]
    for code in codes:
        rows.append(f"| {code['value']} | `{code['name']}` | {_cell(code['doc']) or ' '} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return _inline_markdown(" ".join(text.split())).replace("|", "\\|")


_CODE_SPAN = re.compile(r"``(.+?)``|`([^`]+?)`")
_MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]#])")


def _inline_markdown(text: str) -> str:
    """reST-ish docstring text as Markdown: ``code`` becomes `code`; everything else is shown literally."""
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_literal(text[last : match.start()]))
        code = match.group(1) or match.group(2)
        fence = "``" if "`" in code else "`"
        out.append(f"{fence}{code}{fence}")
        last = match.end()
    out.append(_literal(text[last:]))
    return "".join(out)


def _literal(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def docstring_markdown(doc: str) -> str:
    """A module docstring as Markdown: indented paragraphs become code blocks, the rest text shown as written."""
    blocks = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(doc or "")):
        lines = paragraph.splitlines()
        if not lines:
            continue
        if all(line.startswith((" ", "\t")) for line in lines):
            blocks.append("```text\n" + textwrap.dedent(paragraph) + "\n```")
        else:
            blocks.append("\n".join(_inline_markdown(line) for line in lines))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- collecting (in the child process)


def collect() -> dict:
    import importlib

    commands = {}
    for name in COMMANDS:
        module_name = f"jobs.{name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise SystemExit(f"cannot import {module_name}: {type(err).__name__}: {err}") from None
        build_parser = getattr(module, "build_parser", None)
        if not callable(build_parser):
            raise SystemExit(
                f"{module_name} has no module-level build_parser(); every entry point in jobs/ must "
                "define one (no arguments, returning its ArgumentParser) for the CLI reference"
            )
        try:
            parser = build_parser()
            text = parser.format_help()
        except Exception as err:
            raise SystemExit(f"{module_name}.build_parser(): {type(err).__name__}: {err}") from None
        doc = inspect.cleandoc(module.__doc__ or "")
        summary = (getattr(parser, "description", None) or doc or name).strip().splitlines()[0]
        commands[name] = {"help": _stable(text), "doc": _stable(doc), "summary": _stable(summary)}
    return {"commands": commands, "exit_codes": exit_codes()}


def _stable(text: str) -> str:
    """Help text without this checkout's absolute path, so the page is the same wherever it is built."""
    return text.replace(str(REPO) + os.sep, "").replace(str(REPO), ".")


def exit_codes() -> list[dict]:
    """The exit codes of videns/errors.py, each with what its ``ExitCode`` member says about it."""
    from videns.errors import ExitCode

    return [{"name": code.name, "value": int(code), "doc": code.description} for code in sorted(ExitCode)]


if __name__ == "__main__":
    print(json.dumps(collect()))
