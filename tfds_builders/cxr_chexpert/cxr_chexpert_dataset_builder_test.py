"""DatasetBuilderTestCase for cxr_chexpert on the dummy_data folder (real CheXpert-v1.0-small layout)."""
import tensorflow_datasets as tfds

from tfds_builders.cxr_chexpert import cxr_chexpert_dataset_builder


class CxrChexpertImagesTest(tfds.testing.DatasetBuilderTestCase):
    """A sized image-level config: 6 train images (one lateral), 1 validation, 1 test image."""

    DATASET_CLASS = cxr_chexpert_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64px"]
    SPLITS = {"train": 6, "validation": 1, "test": 1}


class CxrChexpertPatientsTest(tfds.testing.DatasetBuilderTestCase):
    """The grouped config: one example per patient (4 train patients, 1 validation, 1 test)."""

    DATASET_CLASS = cxr_chexpert_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["patients_64px"]
    SPLITS = {"train": 4, "validation": 1, "test": 1}


if __name__ == "__main__":
    tfds.testing.test_main()
