"""Reference pretraining methods for the benchmark, behind the Method API of `baselines.api`.

Reference methods, by the name `baselines.registry.get_method` (and `--method=`) takes:
  "simclr"      SimCLR on every image of the unlabeled groups        (`baselines.simclr.SimCLR`)
  "micle"       MICLe: pairs of two images of the same patient case  (`baselines.micle.MICLe`)
  "supervised"  BiT ResNetV2 supervised ImageNet baseline            (`baselines.supervised.SupervisedBiT`)
  "none"        no in-domain pretraining: the --init_checkpoint encoder (`baselines.none.NoPretraining`)
  "random_init" the requested backbone, no pretraining (random init)  (`baselines.random_init.RandomInit`)

Methods outside this package are named by import path, e.g.
`baselines.examples.minimal_method:RotationPrediction`. See baselines/README.md.
"""
