"""DatasetBuilderTestCase for derm_ham10000 on the dummy_data folder (real Dataverse layout).

The dummy metadata has the real Dataverse file's quirks: CRLF line ends, no line end after the last
row, ages without decimals (`40`), and a row with a blank age and sex `unknown`.
"""
import pathlib

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


def test_dummy_metadata_has_the_real_quirks_and_parses():
    path = pathlib.Path(__file__).parent / "dummy_data" / "HAM10000_metadata.csv"
    data = path.read_bytes()
    assert data.count(b"\r\n") == 7 and not data.endswith(b"\n")
    records = derm_ham10000_dataset_builder.parse_metadata(path)
    assert [r.age for r in records] == [40.0, 85.0, 85.0, 85.0, 35.0, 45.0, -1.0]
    assert records[-1].sex == "unknown" and records[-1].line == 8
    assert len({r.lesion_id for r in records}) == 6


if __name__ == "__main__":
    tfds.testing.test_main()
