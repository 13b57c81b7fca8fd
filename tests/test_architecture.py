"""The tree's three layers hold: entry points, the ML library, the cluster layer; no import cycles; one owner per name.

Read from the source with ``ast``, so a violation names the module and line.
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("jobs", "slurm", "videns")
RUN_FILE_NAME = re.compile(r"^[\w.-]+\.(json|jsonl|yaml|log|md|csv|png|npz|journal)$")


def modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def imports(name: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the module, inside functions too."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from videns.member import checkpoint` imports the submodule
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in MODULES else base, node.lineno))
    return found


def internal_graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in imports(name) if target in MODULES and target != name} for name in MODULES}


def test_no_module_imports_one_that_imports_it_back():
    graph = internal_graph()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_layer_imports_only_what_it_may(name):
    layer = name.split(".")[0]
    for target, line in imports(name):
        where = f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
        top = target.split(".")[0]
        if top == "submitit":
            assert layer == "slurm", where  # submitit is the cluster layer's alone
        if layer == "videns":
            assert top not in ("jobs", "slurm"), where  # the library knows no cluster
        if layer == "slurm":
            assert top != "jobs", where  # the cluster layer serves entry points, never the reverse
        if layer == "jobs":
            assert top != "jobs" or target == "jobs", where  # no entry point uses another as a library


def test_only_the_bench_and_the_gpu_check_use_the_measuring_tool():
    """videns.bench measures training; training, evaluation and prediction never run its code."""
    users = {"jobs.bench", "videns.gpu_check"}
    offenders = [
        f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
        for name in MODULES
        if not name.startswith("videns.bench") and not any(name.startswith(u) for u in users)
        for target, line in imports(name)
        if target.startswith("videns.bench")
    ]
    assert offenders == []


def test_no_code_outside_the_cluster_layer_runs_slurm_commands():
    commands = re.compile(r"""["'](sbatch|squeue|scontrol|sacct|scancel|srun)["']""")
    offenders = [
        f"{path.relative_to(REPO)}: {m.group(0)}"
        for name, path in MODULES.items()
        if not name.startswith("slurm")
        for m in commands.finditer(path.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("jobs.") and n != "jobs"))
def test_entry_points_are_thin(name):
    assert len(MODULES[name].read_text().splitlines()) < 100


def test_every_run_folder_file_name_is_spelled_in_the_layout_module_only():
    owner = "videns.folders"
    names = {
        node.value
        for node in ast.walk(ast.parse(MODULES[owner].read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and RUN_FILE_NAME.match(node.value)
    }
    assert {"progress.json", "launch.json", "resources.jsonl", "report.json", "train.log"} <= names
    elsewhere = [
        f"{name}: {node.value}"
        for name, path in MODULES.items()
        if name != owner
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    ]
    assert elsewhere == []


# Reference values once sat in config comments labelled "seed", beside RNG seeds.
RECIPE_CALLED_SEED = re.compile(r"#\s*seed:|seed[_ -]style|seed[_-]rng|seed[ _-]00\d", re.IGNORECASE)
PROSE_AND_CODE = ("*.py", "*.yaml", "*.md")


def test_seed_means_an_rng_seed_only():
    """In code, configs, README and tests, "seed" is an RNG seed; the recipe a choice follows is "the reference"."""
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for pattern in PROSE_AND_CODE
        for path in REPO.rglob(pattern)
        if not {".venv", "results", "data", ".git"} & set(path.relative_to(REPO).parts)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if RECIPE_CALLED_SEED.search(line)
    ]
    assert offenders == []


# The product talks about itself: what it does and why, not the documents, tickets or work it was built from.
PROCESS_WORDS = re.compile(
    r"design[-_ ]?docs?(?![a-z])|design documents?|\bthe original(?:'s| code| system| implementation)\b"
    r"|\bthe issue\b|\bissues? \d+|\btickets?\b|\bsessions?\b|seed-facts",
    re.IGNORECASE,
)
# pytest's name for fixtures shared by a whole test run.
ALLOWED_PROCESS_WORDS = re.compile(r"""scope=["']session["']""")
WORDED_FOLDERS = ("jobs", "slurm", "videns", "configs", "tests", "docs")
WORDED_FILES = ("*.md", "*.py", "*.yaml", "*.yml", "*.sh", "*.toml")


def worded_files() -> list[Path]:
    found = [REPO / "README.md"] + [
        path for folder in WORDED_FOLDERS for pattern in WORDED_FILES for path in sorted((REPO / folder).rglob(pattern))
    ]
    return [path for path in found if path.is_file() and path.resolve() != Path(__file__).resolve()]


def test_code_configs_and_docs_speak_of_the_product_not_of_how_it_was_built():
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in worded_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if PROCESS_WORDS.search(ALLOWED_PROCESS_WORDS.sub("", line))
    ]
    assert offenders == [], "\n".join(offenders)
