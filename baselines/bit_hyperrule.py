"""BiT-HyperRule (google-research/big_transfer, bit_hyperrule.py): fine-tuning settings from data size.

SGD with momentum 0.9, batch 512, base learning rate 0.003; linear warm-up to the first support
step, x0.1 after each later support, stop at the last.
"""
from __future__ import annotations

from baselines.api import FinetunePolicy

SMALL_DATASET = 20_000
MEDIUM_DATASET = 500_000


def get_resolution(original_resolution: tuple[int, int]) -> tuple[int, int]:
    """(resize, crop) sizes for images of `original_resolution` (height, width)."""
    area = original_resolution[0] * original_resolution[1]
    return (160, 128) if area < 96 * 96 else (512, 480)


def get_schedule(dataset_size: int) -> list[int]:
    """Support steps: end of warm-up, decay points, end of training."""
    if dataset_size < 0:
        raise ValueError(f"dataset_size={dataset_size}: expected a non-negative number of examples")
    if dataset_size < SMALL_DATASET:
        return [100, 200, 300, 400, 500]
    if dataset_size < MEDIUM_DATASET:
        return [500, 3000, 6000, 9000, 10_000]
    return [500, 6000, 12_000, 18_000, 20_000]


def get_mixup(dataset_size: int) -> float:
    """MixUp alpha: 0 for small datasets, 0.1 from 20k examples."""
    return 0.0 if dataset_size < SMALL_DATASET else 0.1


def get_lr(step: int, dataset_size: int, base_lr: float = 0.003) -> float | None:
    """Learning rate at `step`, or None once training is over."""
    supports = get_schedule(dataset_size)
    if step < supports[0]:
        return base_lr * step / supports[0]
    if step >= supports[-1]:
        return None
    return base_lr * 0.1 ** sum(s < step for s in supports[1:])


def finetune_policy(num_examples: int, batch_size: int = 512, base_lr: float = 0.003) -> FinetunePolicy:
    """The BiT-HyperRule schedule for `num_examples` labelled images as a FinetunePolicy."""
    supports = get_schedule(num_examples)
    return FinetunePolicy(
        steps=supports[-1],
        learning_rate=base_lr,
        batch_size=batch_size,
        warmup_steps=supports[0],
        decay_boundaries=tuple(supports[1:-1]),
        mixup_alpha=get_mixup(num_examples),
    )
