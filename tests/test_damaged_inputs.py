"""A damaged or unreadable input file is one line naming file and key, exit code 2, and nothing written.

Every damaged file is made here, from good data, the way real damage looks: a
broken header behind a valid HDF5 signature, a cut-off copy, flipped bytes in
one gzip chunk, a dataset of the wrong type, no read permission, broken tables.
Each case runs the real entry point in a subprocess.
"""

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, run_module, tiny_member_args
from tests.support.damage import damage_chunk, damage_superblock, float_labels, string_features, truncate
from videns.data import layout

USER_ERROR = 2


@pytest.fixture(scope="module")
def public_dir():
    """A folder every user may enter: the permission cases run as ``nobody``, and pytest's tmp is root's only."""
    folder = Path(tempfile.mkdtemp(prefix="videns-damaged-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def case_dir(public_dir, request):
    folder = public_dir / request.node.name.replace("[", "-").replace("]", "")
    folder.mkdir()
    folder.chmod(0o777)  # writable by nobody too: a refusal must come from the data, not from the folder
    return folder


def copy_data(demo_root: Path, case_dir: Path) -> Path:
    root = case_dir / "data"
    shutil.copytree(demo_root, root)
    root.chmod(0o755)
    for path in root.iterdir():
        path.chmod(0o644)
    return root


# --- the kinds of damage -------------------------------------------------------------------------------


def no_read_permission(path: Path) -> str:
    path.chmod(0o000)
    return ""


DAMAGE = {
    "superblock": damage_superblock,
    "truncated": truncate,
    "chunk": damage_chunk,
    "string_features": string_features,
    "float_labels": float_labels,
    "no_permission": no_read_permission,
}


# --- running an entry point and what it must leave ----------------------------------------------------


def nobody_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the job as another user; as a user, chmod 000 stops reads by itself")
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine to drop privileges to")
    return entry.pw_uid, entry.pw_gid


# The interpreter and the venv may live where only root can read (/root/.pyenv): the job's modules are
# imported, and its arguments parsed once, before privileges are dropped; then main() runs as nobody.
AS_NOBODY = """
import os, sys, importlib
module, uid, gid, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
job = importlib.import_module(module)
if module == "jobs.train":
    from videns.config import parse_member_config
    parse_member_config(args)
else:
    job.build_parser().parse_args(args)
os.setgroups([]); os.setgid(gid); os.setuid(uid)
sys.exit(job.main(args))
"""


def run_job(module: str, args: list[str], as_nobody: bool = False) -> subprocess.CompletedProcess:
    if not as_nobody:
        return run_module(module, args, timeout=300)
    uid, gid = nobody_ids()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, module, str(uid), str(gid), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its content hash (folders: their mode)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            found[rel] = f"dir {path.stat().st_mode:o}"
        elif os.access(path, os.R_OK):
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = f"unreadable {path.stat().st_size}"
    return found


def assert_one_line(result: subprocess.CompletedProcess, prog: str, path: Path, key: str) -> str:
    assert result.returncode == USER_ERROR, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"{prog}: error: {path}: "), line
    if key:
        assert f": {key}: " in line, line
    return line


# --- train, val and test splits through jobs.train -------------------------------------------------------


@pytest.mark.parametrize(
    "kind, split",
    [
        ("superblock", "val"),
        ("truncated", "train"),
        ("chunk", "train"),
        ("chunk", "test"),
        ("string_features", "val"),
        ("float_labels", "train"),
        ("no_permission", "test"),
    ],
)
def test_jobs_train_names_the_damaged_file_in_one_line_and_writes_nothing(demo_root, case_dir, kind, split):
    root = copy_data(demo_root, case_dir)
    damaged = layout.split_path(root, split)
    key = DAMAGE[kind](damaged)
    out = case_dir / "member"
    before = snapshot(case_dir)
    result = run_job("jobs.train", tiny_member_args(root, out), as_nobody=kind == "no_permission")
    line = assert_one_line(result, "jobs.train", damaged, key)
    if kind == "no_permission":
        assert line.endswith("cannot open (permission denied)"), line
    assert snapshot(case_dir) == before, "a refused run must write nothing"
    assert not out.exists()


def test_a_chunk_damaged_deep_in_train_read_by_dataloader_workers_ends_as_one_line(demo_root, case_dir):
    """Not scanned up front and not preloaded: the damaged chunk is met mid-epoch, in a worker process."""
    root = copy_data(demo_root, case_dir)
    damaged = layout.split_path(root, "train")
    with h5py.File(damaged, "r") as f:
        num_items = f[layout.FEATURES].shape[0]
    for item in range(num_items):  # every item: whichever the first batch holds is damaged
        damage_chunk(damaged, item)
    out = case_dir / "member"
    result = run_job(
        "jobs.train",
        tiny_member_args(
            root, out, "--data.check_finite", "false", "--data.preload_gb", "0", "--data.num_workers", "2"
        ),
    )
    assert result.returncode == USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [result.stderr.splitlines()[-1]], result.stderr
    assert errors[0].startswith(f"jobs.train: error: {damaged}: {layout.FEATURES}: cannot read ("), errors[0]
    assert not list((out / "checkpoints").glob("step-*")), "no step was trained on unread data"


# --- the test split through jobs.ensemble_eval -----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(demo_root, public_dir) -> Path:
    """A run folder with one finished member (one epoch), readable by every user."""
    run = public_dir / "run"
    result = run_module(
        "jobs.train", tiny_member_args(demo_root, run / "members" / "seed_7", "--trainer.max_epochs", "1"), timeout=300
    )
    assert result.returncode == 0, result.stderr
    for path in [run, *run.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return run


@pytest.mark.parametrize("kind", ["superblock", "truncated", "chunk", "float_labels", "no_permission"])
def test_jobs_ensemble_eval_names_the_damaged_test_file_in_one_line_and_writes_nothing(
    demo_root, case_dir, trained_run, kind
):
    root = copy_data(demo_root, case_dir)
    damaged = layout.split_path(root, "test")
    key = DAMAGE[kind](damaged)
    before = snapshot(trained_run)
    result = run_job(
        "jobs.ensemble_eval",
        ["--run_dir", str(trained_run), "--data_root", str(root), "--device", "cpu"],
        as_nobody=kind == "no_permission",
    )
    assert_one_line(result, "jobs.ensemble_eval", damaged, key)
    assert snapshot(trained_run) == before, "a refused evaluation must write nothing into the run"


# --- tables through jobs.convert -------------------------------------------------------------------------


def write_tables(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    header = ",".join([*(f"s{i}" for i in range(6)), "target"])
    tables = []
    for name, rows in (("train.csv", 40), ("test.csv", 10)):
        lines = [header] + [",".join([*(f"{v:.4f}" for v in rng.standard_normal(6)), str(r % 2)]) for r in range(rows)]
        path = folder / name
        path.write_text("\n".join(lines) + "\n")
        tables.append(path)
    return tables[0], tables[1]


def not_utf8(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:200] + b"\xff\xfe\x80" + data[200:])


def broken_parquet(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parquet = path.with_suffix(".parquet")
    pq.write_table(pacsv.read_csv(path), parquet)
    data = bytearray(parquet.read_bytes())
    data[4:68] = bytes(b ^ 0x5A for b in data[4:68])  # the first column's page header
    parquet.write_bytes(bytes(data))
    assert isinstance(pa, object)
    return parquet


@pytest.mark.parametrize("kind", ["csv_not_utf8", "parquet_damaged", "csv_no_permission"])
def test_jobs_convert_names_the_broken_table_in_one_line_and_writes_nothing(case_dir, kind):
    train, test = write_tables(case_dir)
    if kind == "csv_not_utf8":
        not_utf8(train)
        broken, key = train, "CSV text"
    elif kind == "parquet_damaged":
        pytest.importorskip("pyarrow")
        broken, key = broken_parquet(test), ""
        test = broken
    else:
        no_read_permission(test)
        broken, key = test, "CSV text"
    out = case_dir / "splits"
    before = snapshot(case_dir)
    result = run_job(
        "jobs.convert",
        ["--train", str(train), "--test", str(test), "--out_dir", str(out)],
        as_nobody=kind == "csv_no_permission",
    )
    assert result.returncode == USER_ERROR, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jobs.convert: error: {broken}: "), result.stderr
    assert f": {key}: " in lines[0] if key else "cannot" in lines[0], lines[0]
    assert snapshot(case_dir) == before and not out.exists()


def test_a_chunk_damaged_in_the_test_split_read_by_eval_workers_ends_as_one_line(demo_root, case_dir, trained_run):
    """Not preloaded: the damaged chunk is met during the pass, in a DataLoader worker."""
    root = copy_data(demo_root, case_dir)
    damaged = layout.split_path(root, "test")
    with h5py.File(damaged, "r") as f:
        num_items = f[layout.FEATURES].shape[0]
    for item in range(num_items):
        damage_chunk(damaged, item)
    before = snapshot(trained_run)
    result = run_job(
        "jobs.ensemble_eval",
        [
            "--run_dir",
            str(trained_run),
            "--data_root",
            str(root),
            "--device",
            "cpu",
            "--preload_gb",
            "0",
            "--num_workers",
            "2",
        ],
    )
    assert result.returncode == USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [result.stderr.splitlines()[-1]], result.stderr
    assert errors[0].startswith(f"jobs.ensemble_eval: error: {damaged}: {layout.FEATURES}: cannot read ("), errors[0]
    after = snapshot(trained_run)
    # The pass had begun and said so in its log; no report or other output was written.
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {"ensemble", "ensemble/ensemble_eval.log"}
