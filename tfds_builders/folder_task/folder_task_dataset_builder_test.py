"""DatasetBuilderTestCase for folder_task on the dummy_data folder: a split column, a shift (site B
rows are the shifted split, one with a blank split), a bag column, and images of every kind the
builder converts (8-bit gray, RGB JPEG, RGBA, 16-bit gray and palette PNG, TIFF)."""
import json
import pathlib

import tensorflow_datasets as tfds

from tfds_builders.folder_task import folder_task_dataset_builder, spec

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


class FolderTaskImagesTest(tfds.testing.DatasetBuilderTestCase):
    """One example per image, in the task's splits."""

    DATASET_CLASS = folder_task_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64px"]
    SPLITS = {"train": 3, "validation": 1, "test": 1, "shifted": 2}


class FolderTaskGroupsTest(tfds.testing.DatasetBuilderTestCase):
    """One example per group (patient) with all of its images."""

    DATASET_CLASS = folder_task_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["groups_64px"]
    SPLITS = {"train": 5}


def test_dummy_folder_parses_with_its_metadata_kept():
    folder = spec.read_folder(DUMMY, decode=True)
    assert folder.metadata_columns == ("age", "sex")
    [uncertain] = [r for r in folder.rows if r.group_id == "p2"]
    assert uncertain.label[0] == spec.UNCERTAIN and uncertain.label[1] != uncertain.label[1]  # nan
    assert {r.file_name: r.split for r in folder.rows if r.site == "B"} == {
        "images/b/p5_s1_v1.png": "shifted", "images/b/p5_s1_v2.tif": "shifted"}
    assert json.loads((DUMMY / "task.json").read_text())["name"] == folder.task.name == "dummy_cxr"


if __name__ == "__main__":
    tfds.testing.test_main()
