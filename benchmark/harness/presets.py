"""Named run presets: the sizes that turn the same protocol into a CPU check or a paper-scale run."""
from __future__ import annotations

import dataclasses

from baselines.api import BackboneConfig, PretrainConfig


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """How a preset fine-tunes and probes.

    Fine-tuning's grid of schedules (`benchmark.harness.runner.finetune_grid`): the epochs rule
    gives a length — `epochs` passes over the labelled examples, clipped to [min_steps, steps]
    (`steps` when `epochs` is None) — and every learning rate of `learning_rates` is tried with
    every multiple of it in `length_scales`, each with warm-up over `warmup_fraction` of its steps
    and x0.1 at 60 % and 85 %. A method's own policy (e.g. BiT-HyperRule) replaces the grid with its
    own schedules, shortened by `steps_scale` (CPU presets). Every schedule scores the validation
    split after `eval_points` evenly spaced steps, the last included, and the best point is kept.
    The linear probe searches the inverse L2 strengths C of `probe_grid`
    (`benchmark.harness.linear_probe`)."""

    steps: int
    batch_size: int
    learning_rates: tuple[float, ...]
    length_scales: tuple[float, ...] = (1.0,)
    eval_points: int = 4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    steps_scale: float = 1.0  # applied to a method's own policy (CPU presets shorten BiT-HyperRule)
    epochs: float | None = None  # None: always `steps`
    min_steps: int = 1
    ft_proj_selector: int = 0  # fine-tune from this projection-head layer (SimCLRv2); 0 = the encoder
    probe_grid: tuple[float, ...] = tuple(10.0 ** k for k in range(-4, 5))  # linear probe's C values

    def __post_init__(self):  # tuples of floats also when rebuilt from a row's JSON lists
        for name in ("learning_rates", "length_scales", "probe_grid"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("learning_rates", "length_scales"):
            values = getattr(self, name)
            if not values or any(not v > 0 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"FinetuneSettings.{name}={list(values)}: expected distinct values > 0")
        if self.eval_points < 1:
            raise ValueError(f"FinetuneSettings.eval_points={self.eval_points}: expected >= 1")


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    """How a preset distils a cell's fine-tuned teacher into a student (`benchmark.harness.distill`).

    The student trains on every training image of the cell's split, labelled or not, for a length
    from the epochs rule over all of them (`epochs` passes, clipped to [min_steps, steps]) times
    each of `length_scales`, under every learning rate, temperature and label weight of the grid
    (SGD with momentum 0.9, warm-up over `warmup_fraction`, x0.1 at 60 % and 85 %). Every schedule
    scores the validation split at `eval_points` evenly spaced steps and the best point is kept,
    exactly as fine-tuning chooses (`benchmark.harness.finetune.Trainer.search`). A label weight w
    trains on (1 - w) x the distillation loss + w x the supervised loss of the labelled images."""

    steps: int
    batch_size: int
    learning_rates: tuple[float, ...]
    temperatures: tuple[float, ...] = (1.0,)
    label_weights: tuple[float, ...] = (0.0,)
    length_scales: tuple[float, ...] = (1.0,)
    eval_points: int = 4
    warmup_fraction: float = 0.1
    epochs: float | None = None  # None: always `steps`
    min_steps: int = 1

    def __post_init__(self):  # tuples of floats also when rebuilt from a row's JSON lists
        for name in ("learning_rates", "temperatures", "label_weights", "length_scales"):
            values = tuple(float(v) for v in getattr(self, name))
            object.__setattr__(self, name, values)
            low_ok = (lambda v: 0 <= v <= 1) if name == "label_weights" else (lambda v: v > 0)
            if not values or not all(low_ok(v) for v in values) or len(set(values)) != len(values):
                expected = "in [0, 1]" if name == "label_weights" else "> 0"
                raise ValueError(f"DistillSettings.{name}={list(values)}: expected distinct values "
                                 f"{expected}")
        if self.eval_points < 1:
            raise ValueError(f"DistillSettings.eval_points={self.eval_points}: expected >= 1")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything that sets the scale of a run."""

    name: str
    resolution: str  # builder config holding the stored images, e.g. "64px"
    image_size: int  # training/eval crop size fed to the encoder
    backbone: BackboneConfig
    pretrain: PretrainConfig
    finetune: FinetuneSettings
    label_fractions: tuple[float, ...]  # percent
    seeds: tuple[int, ...]
    eval_modes: tuple[str, ...]
    bootstrap_samples: int
    synthetic_sizes: dict[str, int]  # builder name -> patients/lesions
    synthetic_image_size: int
    distill: DistillSettings  # the `distill` eval mode's grid


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        name="cpu",
        resolution="64px",
        image_size=32,
        backbone=BackboneConfig(family="resnet_v1", depth=18, width=0.25, small_stem=False),
        # Most of the main job's time is pretraining (input-bound here: ~5 steps/s on 2 cores). At
        # 32 px the paper's views (crops down to 8 % of the image, full colour distortion) leave
        # the instance task at chance within ~1k steps (measured, see README "The cpu preset");
        # crops of at least half the image and half the colour distortion make it learnable in
        # budget. The paper preset keeps SimCLR's views. 10 % labels: the label-scarce regime.
        pretrain=PretrainConfig(image_size=32, batch_size=128, steps=900, base_learning_rate=1.0,
                                warmup_fraction=0.05, temperature=0.2, checkpoint_every=150,
                                min_crop_area=0.5, color_scale=0.5),
        # Fine-tuning: 2 learning rates x 2 lengths (half and all of the epochs rule), each scored
        # on validation at 4 points: about 3x the steps of one schedule, within the main job's budget.
        finetune=FinetuneSettings(steps=150, batch_size=64, learning_rates=(0.01, 0.1),
                                  length_scales=(0.5, 1.0), eval_points=4, steps_scale=0.3,
                                  epochs=20, min_steps=50),
        label_fractions=(10.0,),
        seeds=(0, 1),
        eval_modes=("finetune", "linear"),
        bootstrap_samples=200,
        synthetic_sizes={"cxr_chexpert": 700, "cxr_nih14": 300, "derm_ham10000": 700,
                         "derm_pad_ufes20": 250},
        synthetic_image_size=96,
        # Distillation: SimCLRv2's temperatures 1 and 2 (pure distillation, the weight its
        # small-label results used), 20 passes over all training images, one learning rate.
        distill=DistillSettings(steps=150, batch_size=64, learning_rates=(0.1,),
                                temperatures=(1.0, 2.0), eval_points=4, epochs=20, min_steps=50),
    ),
    "smoke": Preset(
        name="smoke",
        resolution="64px",
        image_size=32,
        backbone=BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=False),
        pretrain=PretrainConfig(image_size=32, batch_size=16, steps=4, base_learning_rate=1.0,
                                warmup_fraction=0.25, checkpoint_every=2),
        finetune=FinetuneSettings(steps=4, batch_size=16, learning_rates=(0.05,), eval_points=2,
                                  steps_scale=0.01, probe_grid=(0.01, 1.0, 100.0)),
        label_fractions=(50.0, 100.0),
        seeds=(0,),
        eval_modes=("finetune",),
        bootstrap_samples=20,
        synthetic_sizes={"cxr_chexpert": 40, "cxr_nih14": 20, "derm_ham10000": 40,
                         "derm_pad_ufes20": 20},
        synthetic_image_size=64,
        distill=DistillSettings(steps=4, batch_size=16, learning_rates=(0.05,), eval_points=2),
    ),
    "paper": Preset(
        name="paper",
        resolution="224px",
        image_size=224,
        backbone=BackboneConfig(family="resnet_v1", depth=152, width=2, small_stem=False,
                                global_bn=True),
        pretrain=PretrainConfig(image_size=224, batch_size=1024, steps=100_000,
                                base_learning_rate=0.3, temperature=0.1, projection_layers=3,
                                checkpoint_every=5_000),
        finetune=FinetuneSettings(steps=30_000, batch_size=64, learning_rates=(0.01, 0.03, 0.1, 0.3),
                                  length_scales=(0.5, 1.0), eval_points=8,
                                  probe_grid=tuple(10.0 ** k for k in range(-6, 7))),
        label_fractions=(1.0, 10.0, 100.0),
        seeds=(0, 1, 2, 3, 4),
        eval_modes=("finetune", "linear"),
        bootstrap_samples=1000,
        synthetic_sizes={"cxr_chexpert": 20_000, "cxr_nih14": 5_000, "derm_ham10000": 7_470,
                         "derm_pad_ufes20": 1_373},
        synthetic_image_size=320,
        distill=DistillSettings(steps=30_000, batch_size=64, learning_rates=(0.03, 0.1, 0.3),
                                temperatures=(1.0, 2.0), label_weights=(0.0, 0.5),
                                length_scales=(0.5, 1.0), eval_points=8),
    ),
}


def get_preset(name: str) -> Preset:
    """Returns the preset registered under `name`."""
    if name not in PRESETS:
        raise ValueError(f"--preset={name}: unknown preset; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
