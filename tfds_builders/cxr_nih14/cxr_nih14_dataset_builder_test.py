"""DatasetBuilderTestCase for cxr_nih14 on the dummy_data folder (real layout, Data_Entry_2017_v2020.csv).

The dummy data carries two quirks of the real files: patient 3's `Follow-up #` differs from the
number in its file names (as in the real v2020 file, where 00000003_001.png has Follow-up # 0), and
00000004_000.png is an RGBA PNG with an opaque alpha channel (12 of the real PNGs are).
"""
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tfds_builders.cxr_nih14 import cxr_nih14_dataset_builder

DUMMY = pathlib.Path(__file__).parent / "dummy_data"


class CxrNih14Test(tfds.testing.DatasetBuilderTestCase):
    """A sized config: 10 train_val images (4 patients) and 3 test images (1 patient)."""

    DATASET_CLASS = cxr_nih14_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["64px"]
    SPLITS = {"train": 10, "test": 3}


def test_follow_up_is_kept_as_the_csv_states_it():
    entries = cxr_nih14_dataset_builder.read_entries(DUMMY / "Data_Entry_2017_v2020.csv")
    assert {i: entries[i].follow_up for i in ("00000003_000.png", "00000003_001.png", "00000003_002.png")} == {
        "00000003_000.png": 2, "00000003_001.png": 0, "00000003_002.png": 1}
    assert {r.patient_id for i, r in entries.items() if i.startswith("00000003_")} == {3}


def test_dummy_build_keeps_rgba_gray_values_and_follow_up(tmp_path):
    source = Image.open(DUMMY / "images" / "00000004_000.png")
    assert source.mode == "RGBA"
    rgba = np.asarray(source)
    assert (rgba[..., 3] == 255).all() and (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()
    builder = tfds.builder("cxr_nih14", config="original", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY)))
    examples = {ex["image_index"].decode(): ex for split in ("train", "test")
                for ex in tfds.as_numpy(builder.as_dataset(split=split))}
    ex = examples["00000004_000.png"]
    np.testing.assert_array_equal(ex["image"][..., 0], rgba[..., 0])
    assert int(examples["00000003_000.png"]["follow_up"]) == 2


if __name__ == "__main__":
    tfds.testing.test_main()
