"""DatasetBuilderTestCase for derm_pad_ufes20 on the dummy_data folder (real nested Mendeley layout)."""
import tensorflow_datasets as tfds

from tfds_builders.derm_pad_ufes20 import derm_pad_ufes20_dataset_builder


class DermPadUfes20Test(tfds.testing.DatasetBuilderTestCase):
    """A sized config: one example per image (8 images of 4 patients)."""

    DATASET_CLASS = derm_pad_ufes20_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64px"]
    SPLITS = {"train": 8}


if __name__ == "__main__":
    tfds.testing.test_main()
