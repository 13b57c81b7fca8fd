"""Hyperparameter sweeps: an optuna study in a journal file, trials trained as members.

Knows nothing about SLURM: ``jobs.sweep`` submits workers; each calls :func:`run_worker`.
"""

from videns.folders import SweepFolder
from videns.sweep.claims import WorkerIdentity
from videns.sweep.export import export_results
from videns.sweep.prepare import prepare_sweep
from videns.sweep.settings import SweepSettings
from videns.sweep.spec import SweepSpec, load_sweep_file
from videns.sweep.study import load_study
from videns.sweep.worker import WorkerReport, run_worker

__all__ = [
    "SweepFolder",
    "SweepSettings",
    "SweepSpec",
    "WorkerIdentity",
    "WorkerReport",
    "export_results",
    "load_study",
    "load_sweep_file",
    "prepare_sweep",
    "run_worker",
]
