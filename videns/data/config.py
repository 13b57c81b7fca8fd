"""Where the data is and how training reads it."""

from dataclasses import dataclass
from pathlib import Path

from videns.data.rebalance import MAJORITY, TargetSpec, check_target_spec
from videns.data.sampling import Balance
from videns.errors import ConfigError

GIB = 2**30  # preload_gb counts GiB, as the resource monitor's *_gb fields do


@dataclass
class DataConfig:
    """Data settings. Feature size and classes are read from the files, never set here.

    Args:
        root: folder holding {train,val,test}_features_multiscale.h5.
        generate_demo: write generated demo data into root first if it holds no split files.
        preload_gb: splits whose padded features fit this budget (GiB, together) are read into RAM once.
        num_workers: DataLoader worker processes; batches do not depend on this number.
        augment: the reference recipe's training augmentation (subsample, shift, noise).
        balance: none; weighted_sampler (inverse class frequency, clipped to [0.5, 10]);
            oversample (every class resampled to oversample_target); smote (fixed-length data only).
        oversample_target: items per class for oversample: a count, 'majority' (the majority class's
            count in the training split) or '<k>x majority' (k times it, e.g. '2x majority').
        bucket_window: group items of similar length (after augmentation's subsampling) within windows
            of this many batches (less padding, same order for a given seed); 0 turns it off.
        check_finite: scan every feature for NaN/inf before training.
    """

    root: Path = Path("data/demo")
    generate_demo: bool = False
    preload_gb: float = 4.0
    num_workers: int = 0
    augment: bool = True
    balance: Balance = "weighted_sampler"
    oversample_target: TargetSpec = MAJORITY
    bucket_window: int = 0
    check_finite: bool = True

    def __post_init__(self):
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.preload_gb < 0:
            raise ConfigError(f"data.preload_gb must be >= 0, got {self.preload_gb}")
        if self.bucket_window < 0:
            raise ConfigError(f"data.bucket_window must be >= 0, got {self.bucket_window}")
        check_target_spec(self.oversample_target)
