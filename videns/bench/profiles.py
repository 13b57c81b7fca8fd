"""How big each bench run is: data, models, epochs and repeats, per profile."""

from dataclasses import dataclass, field
from typing import Any, Literal

ProfileName = Literal["tiny", "quick", "full"]

# The reference recipe's model: hidden 768, 4 BiLSTM layers, 12 heads, head 768/512/256 (the class defaults).
FULL_SIZE_MODEL: dict[str, Any] = {}
# Small enough that input and per-step overheads show on 2 CPU cores.
# It learns the demo task to ~0.95 val accuracy in 6-8 epochs of 240 items at lr 2e-3.
SMALL_MODEL: dict[str, Any] = {
    "hidden_dim": 128,
    "num_lstm_layers": 1,
    "num_attention_heads": 4,
    "head_dims": (64,),
    "dropout": 0.1,
}
TINY_MODEL: dict[str, Any] = {
    "hidden_dim": 8,
    "num_lstm_layers": 1,
    "num_attention_heads": 2,
    "head_dims": (8,),
    "dropout": 0.1,
}


@dataclass(frozen=True)
class Profile:
    """Sizes of one bench run.

    Args:
        name: tiny (tests only: seconds, figures meaningless), quick (minutes on 2 CPU cores) or full.
        num_videos: items per generated dataset, split 60/20/20 into train/val/test.
        feature_dim: per-frame feature size D (reference: 1280, EfficientNet-V2).
        max_frames: longest item T (reference: 73).
        mixed_min_frames: shortest item of the variable-length dataset.
        batch_size: training batch (reference: 48).
        epochs: epochs of each training comparison (the first includes setup and is reported apart).
        lr: learning rate of both loops in the training comparison.
        train_model: init_args of the model trained in the CPU training comparison and the ensemble.
        full_model: init_args of the "full-size" model: step times, checkpoints, CUDA section.
        full_steps: timed training steps of the full-size model, ours and reference each; quick takes one,
            as a full-size step costs 4-20 s on 2 CPU cores.
        full_reference: also time the reference loop's full-size step (step_time_ratio). Quick leaves it
            out: on CPU it measured the same as ours (ratio 0.92-1.06 over three runs) and costs 18 s.
        full_warmup: untimed steps before those, each. Quick takes none: on 2 CPU cores the first full-size
            step measured within 5% of the next ones (18.1 s vs 17.3-17.6 s), and a warm-up would cost 40 s.
        loader_repeats: timed epochs per loader (after one warm-up epoch).
        checkpoint_repeats: timed saves and loads per method (after one warm-up each).
        eval_batch_size: batch size of the ensemble evaluation.
    """

    name: ProfileName
    num_videos: int
    feature_dim: int
    max_frames: int
    mixed_min_frames: int
    batch_size: int
    epochs: int
    lr: float
    train_model: dict[str, Any] = field(default_factory=dict)
    full_model: dict[str, Any] = field(default_factory=dict)
    full_steps: int = 2
    full_reference: bool = True
    full_warmup: int = 1
    loader_repeats: int = 3
    checkpoint_repeats: int = 2
    eval_batch_size: int = 128


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        "tiny",
        num_videos=40,
        feature_dim=32,
        max_frames=12,
        mixed_min_frames=4,
        batch_size=8,
        epochs=3,
        lr=3e-3,
        train_model=TINY_MODEL,
        full_model=TINY_MODEL,
        full_steps=1,
        loader_repeats=1,
        checkpoint_repeats=1,
        eval_batch_size=16,
    ),
    "quick": Profile(
        "quick",
        num_videos=400,
        feature_dim=1280,
        max_frames=73,
        mixed_min_frames=16,
        batch_size=48,
        epochs=6,
        lr=2e-3,
        train_model=SMALL_MODEL,
        full_model=FULL_SIZE_MODEL,
        full_steps=1,
        full_reference=False,
        full_warmup=0,
        loader_repeats=2,
        checkpoint_repeats=3,
    ),
    "full": Profile(
        "full",
        num_videos=1200,
        feature_dim=1280,
        max_frames=73,
        mixed_min_frames=16,
        batch_size=48,
        epochs=10,
        lr=2e-3,
        train_model=SMALL_MODEL,
        full_model=FULL_SIZE_MODEL,
        full_steps=5,
        loader_repeats=5,
        checkpoint_repeats=3,
    ),
}


def describe_model(init_args: dict[str, Any], num_params: int) -> str:
    """A short model description for a workload: its non-default init_args and parameter count."""
    args = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in init_args.items())
    return f"TemporalAttentionClassifier({args or 'reference recipe defaults'}) {num_params / 1e6:.2f}M params"
