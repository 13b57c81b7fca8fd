"""The optuna study of a sweep, kept in a journal file inside the run folder.

Optuna gives the sweep its samplers (TPE, the Bayesian method of Ray Tune's
HyperOptSearch; random), its pruners (median; successive halving, the synchronous
core of Ray Tune's ASHA) and a storage that needs no server: ``JournalStorage``
over ``JournalFileBackend`` appends operations to one file under a lock file, so
workers on different nodes share it through the shared filesystem. (Optuna 4+
names; ``JournalFileStorage`` is the deprecated pre-4.0 alias.)
"""

import hashlib
import logging

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from videns.errors import ConfigError
from videns.folders import SweepFolder
from videns.sweep.settings import STUDY_NAME
from videns.sweep.spec import SweepSpec

log = logging.getLogger(__name__)
DEFAULT_PRUNER_ARGS = {
    "median": {"n_startup_trials": 3, "n_warmup_steps": 1},
    "halving": {"min_resource": 1, "reduction_factor": 4},  # Ray Tune's ASHA defaults: grace period 1, factor 4
}


def journal_storage(folder: SweepFolder) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(folder.journal)))


def build_sampler(spec: SweepSpec, worker_seed: int | None = None) -> optuna.samplers.BaseSampler:
    """TPE (with the constant liar, so parallel workers spread out) or random search."""
    seed = spec.seed if worker_seed is None else worker_seed
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def build_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The pruner named in ``spec``, with optuna's arguments from ``pruner_args``; a bad argument is a ConfigError."""
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    kwargs = {**DEFAULT_PRUNER_ARGS[spec.pruner], **spec.pruner_args.get(spec.pruner, {})}
    cls = optuna.pruners.MedianPruner if spec.pruner == "median" else optuna.pruners.SuccessiveHalvingPruner
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner_args.{spec.pruner}: {err}") from None


def worker_seed(spec: SweepSpec, worker_key: str) -> int:
    """Distinct sampler seeds per worker, so parallel workers don't propose the same first trials."""
    digest = hashlib.sha256(f"{spec.seed}:{worker_key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def create_study(folder: SweepFolder, spec: SweepSpec) -> optuna.Study:
    """Create the study in the run folder's journal, or load it if it is there."""
    return optuna.create_study(
        storage=journal_storage(folder),
        study_name=STUDY_NAME,
        direction="maximize",
        sampler=build_sampler(spec),
        pruner=build_pruner(spec),
        load_if_exists=True,
    )


def load_study(folder: SweepFolder, spec: SweepSpec, seed: int | None = None) -> optuna.Study:
    return optuna.load_study(
        study_name=STUDY_NAME,
        storage=journal_storage(folder),
        sampler=build_sampler(spec, seed),
        pruner=build_pruner(spec),
    )
