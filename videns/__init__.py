"""videns: preemption-safe ensembles of sequence classifiers.

The library knows nothing about SLURM: every training entry point runs on a
laptop, and the cluster layer lives in ``jobs/``.
"""

__version__ = "0.1.0"
