"""DatasetBuilderTestCase for cxr_nih14 on the dummy_data folder (real layout, Data_Entry_2017_v2020.csv)."""
import tensorflow_datasets as tfds

from tfds_builders.cxr_nih14 import cxr_nih14_dataset_builder


class CxrNih14Test(tfds.testing.DatasetBuilderTestCase):
    """A sized config: 10 train_val images (4 patients) and 3 test images (1 patient)."""

    DATASET_CLASS = cxr_nih14_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64px"]
    SPLITS = {"train": 10, "test": 3}


if __name__ == "__main__":
    tfds.testing.test_main()
