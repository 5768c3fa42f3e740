"""Training: the trainer loop and its parts (config, batches, phases, log), EMA, safetensors
checkpoints and distributed helpers."""

from .checkpoint import (
    CheckpointError,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from .config import TrainConfig, lr_factor
from .distributed import (
    DistInfo,
    LossAdapter,
    cleanup_distributed,
    dist_info,
    init_distributed,
    rank_seed,
    shard_batches,
    wrap_model,
)
from .ema import EMA
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "EMA",
    "CheckpointError",
    "DistInfo",
    "LossAdapter",
    "TrainConfig",
    "Trainer",
    "TrainingDivergedError",
    "checkpoint_dir",
    "cleanup_distributed",
    "dist_info",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "rank_seed",
    "save_checkpoint",
    "save_weights",
    "shard_batches",
    "wrap_model",
]
