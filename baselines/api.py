"""The interface a pretraining method implements (methods are looked up by name in `baselines.registry`).

A method turns unlabeled, patient-grouped images into an encoder. The harness then fine-tunes or
linearly probes that encoder on labelled fractions and scores it (see `benchmark/`).

Data contract (`groups`): a `tf.data.Dataset` whose elements are dicts
  {"group_id": tf.string scalar, "images": tf.uint8 [n, H, W, 3]} with n >= 1,
one element per patient case (CheXpert patient, HAM10000 lesion). Grayscale sources are tiled to 3
channels by the harness. H and W may exceed `PretrainConfig.image_size`; methods crop and resize.

Encoder contract: a `keras.Model` mapping float32 images [B, S, S, 3] in [0, 1] to features [B, D].
"""
from __future__ import annotations

import abc
import dataclasses
import inspect
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # annotations only: the configs here are read without TensorFlow
    import keras
    import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Which encoder to build: SimCLR ResNet v1 (`resnet_v1`), BiT ResNetV2 (`bit`) or BoTNet
    (`botnet`: resnet_v1 with self-attention in c5)."""

    family: str = "resnet_v1"
    depth: int = 18
    width: float = 1  # SimCLR's 1/2/4; resnet_v1 and botnet also take 0.25/0.5 for CPU-sized runs
    small_stem: bool = True
    global_bn: bool = False
    sk_ratio: float = 0.0  # resnet_v1 only: selective kernels + ResNet-D (SimCLRv2 "sk1": 0.0625)
    # The image side the encoder is built for: required by botnet (its position tables depend on
    # it), None for the other families, which take any size.
    image_size: int | None = None


def backbone_record(config: BackboneConfig) -> dict:
    """`config` as a JSON-ready dict; `image_size` only when set (records of the families that
    take any size are as before the field existed)."""
    record = dataclasses.asdict(config)
    if record["image_size"] is None:
        del record["image_size"]
    return record


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining settings shared by the contrastive methods."""

    image_size: int = 32
    batch_size: int = 32
    steps: int = 100
    warmup_fraction: float = 0.1
    base_learning_rate: float = 0.3
    weight_decay: float = 1e-6
    temperature: float = 0.1
    projection_layers: int = 2
    projection_dim: int = 128
    augmentation: str = "simclr"  # "simclr" or "cxr"
    min_crop_area: float = 0.08  # smallest random-resized-crop area of a view (SimCLR: 0.08)
    color_scale: float = 1.0  # colour distortion strength as a multiple of the view's own
    optimizer: str = "lars"  # "lars" or "adam"
    checkpoint_every: int = 25
    seed: int = 0
    precision: str = "float32"  # "float32" or "bfloat16" (`baselines.precision`)


@dataclasses.dataclass(frozen=True)
class FinetunePolicy:
    """A supervised fine-tuning schedule: linear warm-up to `learning_rate`, x0.1 at each boundary."""

    steps: int
    learning_rate: float
    batch_size: int
    warmup_steps: int
    decay_boundaries: tuple[int, ...] = ()
    mixup_alpha: float = 0.0


class Method(abc.ABC):
    """A pretraining method: unlabeled patient groups in, encoder out."""

    name: ClassVar[str]

    def backbone(self, requested: BackboneConfig) -> BackboneConfig:
        """The backbone this method trains given the run's requested one (default: as requested;
        the supervised BiT baseline maps it to the BiT family)."""
        return requested

    def finetune_policy(self, num_examples: int) -> FinetunePolicy | tuple[FinetunePolicy, ...] | None:
        """The fine-tuning schedule this method asks for on `num_examples` labelled images, or its
        own grid of schedules (the harness keeps the one, and the step, that scores best on the
        validation split); None leaves it to the harness preset's grid. The harness may scale steps
        down for CPU presets."""
        return None

    @abc.abstractmethod
    def pretrain(
        self,
        groups: tf.data.Dataset,
        *,
        backbone: BackboneConfig,
        config: PretrainConfig,
        strategy: tf.distribute.Strategy,
        checkpoint_dir: str,
        init_checkpoint: str | None = None,
    ) -> keras.Model:
        """Pretrains and returns the encoder; resumes from `checkpoint_dir` if it holds a checkpoint,
        starts from `init_checkpoint` (an earlier stage's checkpoint directory) otherwise, and writes
        the final checkpoint to `checkpoint_dir` for the next stage.

        Optional keywords (`OPTIONAL_PRETRAIN_ARGS`), passed by the harness only to methods whose
        `pretrain` names them (or takes **kwargs), so methods written before them keep working:
          summary_dir: str | None, a directory of its own for the training curve as TensorBoard
            event files (see `baselines.events`); None: write none.
        """


OPTIONAL_PRETRAIN_ARGS = ("summary_dir",)


def accepted_pretrain_args(method: Method, **offered) -> dict:
    """The `offered` optional keywords (`OPTIONAL_PRETRAIN_ARGS`) that `method.pretrain` accepts."""
    unknown = set(offered) - set(OPTIONAL_PRETRAIN_ARGS)
    if unknown:
        raise ValueError(f"accepted_pretrain_args: {sorted(unknown)} are not optional pretrain arguments "
                         f"({OPTIONAL_PRETRAIN_ARGS})")
    parameters = inspect.signature(method.pretrain).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(offered)
    names = {p.name for p in parameters if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                      inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in offered.items() if k in names}
