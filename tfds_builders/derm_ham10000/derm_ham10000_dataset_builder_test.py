"""DatasetBuilderTestCase for derm_ham10000 on the dummy_data folder (real Dataverse layout)."""
import tensorflow_datasets as tfds

from tfds_builders.derm_ham10000 import derm_ham10000_dataset_builder


class DermHam10000ImagesTest(tfds.testing.DatasetBuilderTestCase):
    """A sized image-level config: one example per image (7 images)."""

    DATASET_CLASS = derm_ham10000_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64px"]
    SPLITS = {"train": 7}


class DermHam10000LesionsTest(tfds.testing.DatasetBuilderTestCase):
    """The grouped config: one example per lesion (6 lesions, one of them with two images)."""

    DATASET_CLASS = derm_ham10000_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["lesions_original"]
    SPLITS = {"train": 6}


if __name__ == "__main__":
    tfds.testing.test_main()
