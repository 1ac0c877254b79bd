"""Your own data: a folder of images with `metadata.csv` and `task.json` (see `spec`), as TFDS."""
from __future__ import annotations

import io
import json

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import _common
from tfds_builders.folder_task import spec

_EXPECTED = (f"{spec.TASK_FILE}, {spec.METADATA_FILE} (a file_name column with each image's path "
             "relative to the folder) and the images anywhere below it")


def _load(row: spec.Row, size: int | None, where: str) -> bytes:
    """The image of `row` as 8-bit RGB PNG bytes (`_common.convert_mode`), resized when `size`."""
    try:
        image = spec.open_rgb(row.path)
    except ValueError as e:
        raise spec.FolderError(f"{where}: file_name {row.file_name!r} {e}") from None
    if size is not None:
        image = _common.resize_shorter_center_crop(image, size)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class Builder(tfds.core.GeneratorBasedBuilder):
    """A folder task (manual_dir = the folder)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _common.image_configs(
        original="every image at its own size, as 8-bit RGB PNG", encoding="as 8-bit RGB PNG",
        group="group", grouped_original_note=(
            " Images of one group can differ in size, which a Sequence cannot stack: read this config "
            "with decoders={'images': {'image': tfds.decode.SkipDecoding()}} and decode each image."))
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"manual_dir is the task's folder: {_EXPECTED}."

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        image = tfds.features.Image(shape=(None, None, 3) if size is None else (size, size, 3),
                                    encoding_format="png")
        if self.builder_config.grouped:
            features = tfds.features.FeaturesDict({
                "group_id": tfds.features.Text(),
                "images": tfds.features.Sequence({"image": image, "bag_id": tfds.features.Text(),
                                                  "file_name": tfds.features.Text()}),
            })
        else:
            features = tfds.features.FeaturesDict({
                "image": image,
                "file_name": tfds.features.Text(),
                "group_id": tfds.features.Text(),
                "bag_id": tfds.features.Text(),
                "site": tfds.features.Text(),
                "label": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "metadata": tfds.features.Text(),
            })
        return self.dataset_info_from_configs(features=features)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _common.manual_dir_of(dl_manager, dataset="folder_task", expected=_EXPECTED,
                                     obtain="your own collection")
        folder = spec.read_folder(root)
        if self.builder_config.grouped:
            return {"train": self._generate_examples(folder, list(folder.rows))}
        return {split: self._generate_examples(folder, folder.split_rows(split)) for split in folder.splits}

    def _loader(self, folder: spec.Folder):
        path = folder.root / spec.METADATA_FILE
        return lambda row: _load(row, self.builder_config.size, f"{path}:{row.line}")

    def _generate_examples(self, folder: spec.Folder, rows: list[spec.Row]):
        if self.builder_config.grouped:
            yield from self._generate_groups(folder, rows)
            return
        for row, image in zip(rows, _common.imap_ordered(self._loader(folder), rows)):
            yield row.file_name, {
                "image": image, "file_name": row.file_name, "group_id": row.group_id,
                "bag_id": row.bag_id, "site": row.site, "label": np.asarray(row.label, np.float32),
                "metadata": json.dumps(dict(row.metadata), sort_keys=True, ensure_ascii=False),
            }

    def _generate_groups(self, folder: spec.Folder, rows: list[spec.Row]):
        groups: dict[str, list[spec.Row]] = {}
        for row in rows:
            groups.setdefault(row.group_id, []).append(row)
        ordered = [row for members in groups.values() for row in members]
        images = _common.imap_ordered(self._loader(folder), ordered)
        for group, members in groups.items():
            yield group, {
                "group_id": group,
                "images": [{"image": next(images), "bag_id": r.bag_id, "file_name": r.file_name}
                           for r in members],
            }
