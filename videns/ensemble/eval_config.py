"""What ``jobs.ensemble_eval`` is asked to do: one run's ensemble, or an ensemble selected from a library."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from videns.ensemble.combine import COMBINATIONS, Combination
from videns.ensemble.conformal import DEFAULT_COVERAGE, coverage_problem
from videns.errors import ConfigError
from videns.folders import RunFolder, library_ensemble_folder

# A run's members are averaged unless asked otherwise; a library's candidates are always selected greedily.
RUN_COMBINATION: Combination = "mean"
LIBRARY_COMBINATION: Combination = "greedy"


@dataclass
class EnsembleEvalConfig:
    """Evaluate a run's ensemble, or select one from a library of runs and sweeps: validation decides, test scores.

    Args:
        run_dir: the run folder (holds members/seed_<N>/ and, from the launcher, launch.json).
        library: instead of one run: run folders and sweep folders whose finished models form the pool that a
            library ensemble is selected from (Caruana forward selection with replacement on validation NLL).
        out_dir: where a library ensemble is written (default: library_ensemble/ inside the first --library
            folder); a run's ensemble is always written to RUN/ensemble/.
        max_members: with --library, pick at most this many distinct candidates (default: no cap).
        tta: average each member over the test-time views none/reverse/speed_up/speed_down first.
        members: evaluate only these seeds (default: every member of the run).
        data_root: folder holding the val and test split files (default: data.root saved with the first usable
            member; a library's candidates must all have been trained on the same split files).
        batch_size: test items per batch (every member and view sees each batch).
        device: auto picks cuda when available.
        num_workers: DataLoader worker processes reading the test file.
        preload_gb: read a split into RAM first when its padded features fit this budget (GiB).
        combine: how members combine, chosen on validation: mean (the plain softmax average), mean_unflagged
            (the average of members not flagged as collapsed), greedy (Caruana forward selection with
            replacement on validation NLL). Every combination is reported; this one is the ensemble.
            Default: mean for a run; a library is always greedy.
        coverage: the share of test items whose conformal prediction set should hold their true class
            (split conformal, calibrated on validation).
        mondrian: calibrate the sets per class (class-conditional coverage) instead of over all classes.
    """

    run_dir: Path | None = None
    library: list[Path] | None = None
    out_dir: Path | None = None
    max_members: int | None = None
    tta: bool = False
    members: list[int] | None = None
    data_root: Path | None = None
    batch_size: int = 128
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = 0
    preload_gb: float = 4.0
    combine: Combination | None = None
    coverage: float = DEFAULT_COVERAGE
    mondrian: bool = False

    def __post_init__(self):
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else None
        self.library = [Path(p) for p in self.library] if self.library is not None else None
        self.data_root = Path(self.data_root) if self.data_root is not None else None
        problems = self._source_problems() + self._option_problems()
        if problems:
            raise ConfigError("; ".join(problems))
        if self.combine is None:
            self.combine = LIBRARY_COMBINATION if self.library else RUN_COMBINATION
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else self._default_out_dir()

    def _source_problems(self) -> list[str]:
        """Exactly one of run_dir and library, and what only a library (or only a run) takes."""
        if (self.run_dir is None) == (self.library is None):
            return [
                "give exactly one of --run_dir RUN (one run's members) or --library DIR [DIR ...] (select from "
                "runs and sweeps)" + (", not both" if self.run_dir is not None else "")
            ]
        if self.run_dir is not None:
            problems = [] if self.run_dir.is_dir() else [f"run_dir {self.run_dir}: folder does not exist"]
            library_only = (
                (
                    "--out_dir",
                    self.out_dir is not None,
                    ": a run's ensemble is RUN/ensemble/, where jobs.predict --run_dir finds it",
                ),
                ("--max_members", self.max_members is not None, "; for a run, --members picks seeds"),
            )
            problems += [f"{flag} is for --library only{why}" for flag, given, why in library_only if given]
            return problems
        problems = [f"library {p}: folder does not exist" for p in self.library if not p.is_dir()]
        if not self.library:
            problems.append("library must name at least one run or sweep folder")
        if self.members is not None:
            problems.append("--members is for --run_dir only; a library's pool is every finished model of its folders")
        if self.combine not in (None, LIBRARY_COMBINATION):
            problems.append(
                f"combine {self.combine!r}: a library ensemble is selected greedily (combine greedy); "
                "the plain averages of the pool are reported beside it"
            )
        if self.max_members is not None and self.max_members < 1:
            problems.append(f"max_members must be >= 1, got {self.max_members}")
        return problems

    def _option_problems(self) -> list[str]:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {self.num_workers}")
        if self.preload_gb < 0:
            problems.append(f"preload_gb must be >= 0, got {self.preload_gb}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.combine is not None and self.combine not in COMBINATIONS:
            problems.append(f"combine must be one of {', '.join(COMBINATIONS)}, got {self.combine!r}")
        if coverage_problem(self.coverage, "coverage"):
            problems.append(coverage_problem(self.coverage, "coverage"))
        if self.members is not None and not self.members:
            problems.append("members must name at least one seed when given")
        return problems

    def _default_out_dir(self) -> Path:
        if self.library:
            return library_ensemble_folder(self.library[0]).root
        return RunFolder(self.run_dir).ensemble.root
