"""jobs.ensemble_eval --library on real tiny members and a real sweep trial: selection on validation only, a bad
candidate left out, a pool trained on other split files refused, the report, and jobs.predict applying it."""

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import jobs.sweep
from jobs import ensemble_eval, predict, train
from tests.conftest import REPO, run_module, tiny_member_args
from tests.support.trust_run import copy_data, permute_labels
from videns.data import layout
from videns.ensemble.candidates import find_pool
from videns.ensemble.combine import greedy_picks
from videns.folders import MemberFolder
from videns.member.checkpoint import load_best, save_best
from videns.models.class_path import build_model

pytestmark = pytest.mark.usefixtures("module_on_one_thread", "restore_log_handlers")

GOOD_SEEDS, BAD_SEED = (1, 2), 9
BAD = f"runA/seed_{BAD_SEED}"
TRIAL = "sweepB/trial_0"


@dataclass
class Library:
    run: Path  # two good members and one that never learned (lr 1e-12)
    sweep: Path  # one COMPLETE trial of a smaller model
    out: Path  # the library ensemble, evaluated once with the defaults


def train_member(data: Path, folder: Path, seed: int, *extra: str) -> None:
    assert (
        train.main(
            tiny_member_args(
                data,
                folder,
                "--seed",
                str(seed),
                "--trainer.max_epochs",
                "8",
                "--optimizer.lr",
                "1e-2",
                "--schedule.t0_epochs",
                "8",
                *extra,
            )
        )
        == 0
    )


def run_tiny_sweep(data: Path, sweep: Path) -> None:
    spec = sweep.parent / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "recipe": str(REPO / "configs" / "demo.yaml"),
                "sampler": "random",
                "pruner": "none",
                "space": {"model.init_args.dropout": {"type": "categorical", "choices": [0.1, 0.2]}},
            }
        )
    )
    assert (
        jobs.sweep.main(
            [
                "--config",
                str(spec),
                "--trials",
                "1",
                "--run_dir",
                str(sweep),
                "--worker",
                "--data.root",
                str(data),
                "--data.generate_demo",
                "false",
                "--model.init_args.hidden_dim",
                "8",
                "--model.init_args.num_attention_heads",
                "2",
                "--model.init_args.head_dims",
                "[8]",
                "--trainer.batch_size",
                "16",
                "--trainer.max_epochs",
                "4",
                "--trainer.progress",
                "off",
                "--optimizer.lr",
                "1e-2",
                "--schedule.t0_epochs",
                "4",
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def library(trust_data: Path, tmp_path_factory) -> Library:
    base = tmp_path_factory.mktemp("library")
    run, sweep = base / "runA", base / "sweepB"
    for seed in GOOD_SEEDS:
        train_member(trust_data, run / "members" / f"seed_{seed}", seed)
    # optimizer.lr must be > 0; at 1e-12 the weights never leave their initialisation.
    train_member(trust_data, run / "members" / f"seed_{BAD_SEED}", BAD_SEED, "--optimizer.lr", "1e-12")
    run_tiny_sweep(trust_data, sweep)
    assert ensemble_eval.main(["--library", str(run), str(sweep)]) == 0
    return Library(run, sweep, run / "library_ensemble")


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def npz(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "predictions.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def selection(rep: dict) -> tuple:
    """Everything validation decided: the picks, their order and weights, the temperature, the flags."""
    return (
        rep["library"]["selection"]["picks"],
        rep["library"]["selection"]["pick_order"],
        rep["combinations"]["greedy"]["weights"],
        rep["calibration"]["temperature"],
        rep["flags"],
    )


def test_report_lists_the_pool_the_picks_their_weights_and_the_comparisons(library: Library):
    rep = report(library.out)
    pool = {m["name"]: m for m in rep["members"]}
    assert set(pool) == {*(f"runA/seed_{s}" for s in (*GOOD_SEEDS, BAD_SEED)), TRIAL}
    assert pool[TRIAL]["kind"] == "trial" and pool["runA/seed_1"]["kind"] == "member"
    for entry in pool.values():
        assert entry["family"] == "videns.models.TemporalAttentionClassifier" and "seed" in entry["settings"]
        assert 0 <= entry["val_accuracy"] <= 1 and entry["val_nll"] > 0 and len(entry["weights_sha256"]) == 64
    assert pool[TRIAL]["settings"]["model.init_args.hidden_dim"] == 8
    assert pool[BAD]["settings"]["optimizer.lr"] == 1e-12

    picks = rep["library"]["selection"]["picks"]
    assert picks and sum(p["weight"] for p in picks) == pytest.approx(1.0)
    assert {p["name"]: p["weight"] for p in picks} == {n: m["weight"] for n, m in pool.items() if m["weight"] > 0}
    assert rep["ensemble"]["names"] == [p["name"] for p in picks]
    pred = npz(library.out)
    assert pred["names"].tolist() == [m["name"] for m in rep["members"]]
    assert pred["weights"].tolist() == [pool[n]["weight"] for n in pred["names"].tolist()]

    comparisons = rep["library"]["comparisons"]
    best = min(pool.values(), key=lambda m: m["val_nll"])
    assert comparisons["best_single"]["name"] == best["name"]
    assert comparisons["best_single"]["test"]["accuracy"] == pytest.approx(best["accuracy"])
    same_config = ["runA/seed_1", "runA/seed_2"] if best["name"] != TRIAL else [TRIAL]  # apart from the seed
    assert comparisons["seed_ensemble"]["names"] == same_config
    markdown = (library.out / "report.md").read_text()
    for name, versus in (("best_single", "the best single model"), ("seed_ensemble", "seed ensemble of the best")):
        statement = comparisons[name]["statement"]
        gain = comparisons["library_ensemble"]["accuracy"] - comparisons[name]["test"]["accuracy"]
        assert statement.startswith("The library ensemble beats" if gain > 0 else "The library ensemble does not beat")
        assert versus in statement and statement in markdown
    for section in (
        "Library ensemble against the best single model",
        "Picks (validation only)",
        "Pool",
        "Data",
        "Calibration",
        "Prediction sets",
    ):
        assert f"## {section}" in markdown
    assert f"| {TRIAL} | videns.models.TemporalAttentionClassifier |" in markdown
    trained_on = rep["library"]["data"]["trained_on"]
    assert set(trained_on) == {"train", "val", "test"} and all(len(f["sha256"]) == 64 for f in trained_on.values())


def test_a_candidate_that_never_learned_is_never_picked(library: Library):
    rep = report(library.out)
    bad = next(m for m in rep["members"] if m["name"] == BAD)
    assert bad["flagged"] and bad["weight"] == 0 and bad["times_picked"] == 0
    assert BAD not in rep["library"]["selection"]["pick_order"]
    assert rep["combinations"]["greedy"]["weights"][BAD] == 0
    assert BAD not in rep["ensemble"]["names"] and rep["flagged_in_combination"] == []


def test_max_members_caps_the_distinct_picks_and_only_repeats_them():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    onehot = np.eye(3)[labels]
    members = np.stack([0.5 * onehot + 0.5 * rng.dirichlet(np.ones(3), size=200) for _ in range(5)])  # (M, N, C)
    free = greedy_picks(members, labels)
    assert len(set(free)) >= 3  # uncapped, several members each add something
    for cap in (1, 2):
        capped = greedy_picks(members, labels, max_members=cap)
        assert len(set(capped)) == cap and capped[:1] == free[:1]


def test_selection_never_reads_test_labels(library: Library, trust_data: Path, tmp_path: Path):
    permuted = copy_data(trust_data, tmp_path / "permuted", "test", permute_labels(1))
    out = tmp_path / "permuted_ensemble"
    assert (
        ensemble_eval.main(
            ["--library", str(library.run), str(library.sweep), "--data_root", str(permuted), "--out_dir", str(out)]
        )
        == 0
    )

    before, after = report(library.out), report(out)
    assert selection(after) == selection(before)
    assert (
        after["library"]["comparisons"]["best_single"]["name"]
        == before["library"]["comparisons"]["best_single"]["name"]
    )  # chosen by validation NLL
    assert after["ensemble"]["accuracy"] != before["ensemble"]["accuracy"]  # the test labels did change
    data = after["library"]["data"]
    assert data["evaluated_on"]["test"]["sha256"] != data["trained_on"]["test"]["sha256"]
    assert data["evaluated_on"]["val"]["sha256"] == data["trained_on"]["val"]["sha256"]


def test_a_pool_trained_on_other_split_files_is_refused_in_one_line_naming_it(
    library: Library, trust_data: Path, tmp_path: Path
):
    shuffled = copy_data(trust_data, tmp_path / "shuffled_data", "train", permute_labels(0))
    other = tmp_path / "runOther"
    train_member(shuffled, other / "members" / "seed_4", 4, "--trainer.max_epochs", "1")
    done = run_module(
        "jobs.ensemble_eval", ["--library", str(other), str(library.run), str(library.sweep)], timeout=120
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("jobs.ensemble_eval: error: library: candidate runOther/seed_4 ")
    train_file = layout.split_path(Path("x"), "train").name
    assert f"its train file {shuffled / train_file} (" in line and f"differs from {trust_data / train_file} (" in line
    assert "4 of the 5 candidates" in line
    assert not (other / "library_ensemble").exists() and done.stdout == ""  # refused before any work


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_applies_the_library_ensemble_and_refuses_a_changed_best_model(
    library: Library, trust_data: Path, tmp_path: Path, capsys
):
    copies = tmp_path / "copies"  # the report records its candidates' folders; change one in a copy, not the fixture
    for source in (library.run, library.sweep):
        shutil.copytree(source, copies / source.name, symlinks=True, ignore=shutil.ignore_patterns("library_ensemble"))
    ensemble = tmp_path / "ensemble"
    assert (
        ensemble_eval.main(["--library", str(copies / "runA"), str(copies / "sweepB"), "--out_dir", str(ensemble)]) == 0
    )
    out = tmp_path / "test.csv"
    test_file = layout.split_path(trust_data, "test")
    assert predict.main(["--ensemble_dir", str(ensemble), "--input", str(test_file), "--out", str(out)]) == 0
    rep, pred = report(ensemble), npz(ensemble)
    names = rep["class_names"]
    probs = np.array([[float(r[f"prob_{n}"]) for n in names] for r in read_csv(out)])
    np.testing.assert_allclose(probs, pred["calibrated_probs"], rtol=0, atol=1e-6)
    metrics = json.loads(out.with_name("test.metrics.json").read_text())
    assert metrics["candidates"] == rep["ensemble"]["names"] and metrics["combination"] == "greedy"

    picked = rep["members"][[m["name"] for m in rep["members"]].index(rep["ensemble"]["names"][0])]
    folder = MemberFolder(Path(picked["folder"]))
    tensors, meta, _ = load_best(folder)
    model = build_model(meta["model"], meta["data"]["feature_dim"], len(meta["data"]["class_names"]))
    model.load_state_dict({name: t + 1e-3 for name, t in tensors.items()})
    save_best(folder, model, {**meta, "epoch": meta["epoch"] + 1})  # as a resumed training writes a later best
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--ensemble_dir", str(ensemble), "--input", str(test_file), "--out", str(out), "--overwrite"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and line.startswith("jobs.predict: error: ")
    assert f"candidate {picked['name']}" in line and folder.best_version(meta["epoch"] + 1).name in line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--run_dir", "RUN", "--library", "RUN"], ["exactly one of --run_dir", "--library", "not both"]),
        ([], ["exactly one of --run_dir RUN", "--library DIR"]),
        (["--run_dir", "RUN", "--max_members", "2"], ["--max_members is for --library only"]),
        (["--library", "RUN", "--members", "1"], ["--members is for --run_dir only"]),
    ],
)
def test_run_dir_and_library_exclude_each_other_in_one_line(library: Library, args, words, capsys):
    args = [str(library.run) if a == "RUN" else a for a in args]
    with pytest.raises(SystemExit) as stopped:
        ensemble_eval.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(err) == 1 and err[0].startswith("jobs.ensemble_eval: error: "), err
    assert all(word in err[0] for word in words), err[0]


def test_only_complete_trials_and_done_members_join_the_pool(library: Library, tmp_path: Path):
    sweep = tmp_path / "sweepB"
    shutil.copytree(library.sweep, sweep, symlinks=True)
    end = sweep / "trials" / "trial_0" / "trial.json"
    end.write_text(json.dumps({**json.loads(end.read_text()), "state": "PRUNED", "note": "pruned after epoch 2"}))
    run = tmp_path / "runA"
    shutil.copytree(library.run, run, symlinks=True, ignore=shutil.ignore_patterns("library_ensemble"))
    (run / "members" / "seed_2" / "result.json").unlink()  # as if killed before it finished

    pool = find_pool([run, sweep])
    assert [m.name for m in pool.members] == ["runA/seed_1", f"runA/seed_{BAD_SEED}"]
    reasons = {s.name: s.reason for s in pool.skipped}
    assert reasons[TRIAL] == "PRUNED: pruned after epoch 2" and reasons["runA/seed_2"].startswith("unfinished")
