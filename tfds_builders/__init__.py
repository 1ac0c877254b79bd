"""TFDS builders of the suite; importing this package registers them with `tfds`.

cxr_chexpert, cxr_nih14, derm_ham10000, derm_pad_ufes20: manual-download builders that read the
real on-disk formats (and the synthetic real-format sets of `tfds_builders.synthetic`).
folder_task: your own images with a metadata.csv and a task.json (`tfds_builders.folder_task.spec`).
"""
from tfds_builders.cxr_chexpert import cxr_chexpert_dataset_builder
from tfds_builders.cxr_nih14 import cxr_nih14_dataset_builder
from tfds_builders.derm_ham10000 import derm_ham10000_dataset_builder
from tfds_builders.derm_pad_ufes20 import derm_pad_ufes20_dataset_builder
from tfds_builders.folder_task import folder_task_dataset_builder

__all__ = [
    "cxr_chexpert_dataset_builder",
    "cxr_nih14_dataset_builder",
    "derm_ham10000_dataset_builder",
    "derm_pad_ufes20_dataset_builder",
    "folder_task_dataset_builder",
]
