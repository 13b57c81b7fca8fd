"""Helpers the tests share: data builders, member-file comparisons, the local SLURM cluster."""
