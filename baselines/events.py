"""Scalar curves as TensorBoard event files, written and read with TensorFlow alone.

`ScalarWriter` writes what `tf.summary.scalar` writes (a float32 scalar tensor tagged for
TensorBoard's scalars dashboard) through the core `tf.summary.write` op, so the `tensorboard`
package is needed only to view the curves (`pip install tensorboard`;
`tensorboard --logdir <dir>`), not to train. `read_scalars` reads them back.
"""
from __future__ import annotations

import collections

import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.core.util import event_pb2

EVENT_FILE_PATTERN = "events.out.tfevents.*"


def _scalar_metadata(description: str) -> summary_pb2.SummaryMetadata:
    """The metadata of TensorBoard's scalar summaries (plugin "scalars", plugin data version 0,
    which serialises to no bytes)."""
    return summary_pb2.SummaryMetadata(
        summary_description=description,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars", content=b""),
        data_class=summary_pb2.DATA_CLASS_SCALAR)


class ScalarWriter:
    """Appends scalar points to a new event file in `logdir` (created if needed)."""

    def __init__(self, logdir: str, descriptions: dict[str, str] | None = None):
        self._writer = tf.summary.create_file_writer(logdir)
        self._metadata = {tag: _scalar_metadata(text) for tag, text in (descriptions or {}).items()}

    def write(self, step: int, values: dict[str, float]) -> None:
        """Writes `values` (tag -> number) at `step` and flushes them to disk."""
        with self._writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=int(step),
                                 metadata=self._metadata.get(tag, _scalar_metadata("")))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of the scalar events in `logdir`'s own event files (not its
    sub-directories), in file order then write order; {} when there are none. A file cut short
    (a killed writer) is read up to its last complete event."""
    found = collections.defaultdict(list)
    for path in sorted(tf.io.gfile.glob(f"{logdir.rstrip('/')}/{EVENT_FILE_PATTERN}")):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        found[value.tag].append((int(event.step), float(value.simple_value)))
                    elif value.metadata.plugin_data.plugin_name == "scalars":
                        found[value.tag].append((int(event.step), float(tf.make_ndarray(value.tensor))))
        except tf.errors.DataLossError:
            continue
    return dict(found)


def remove_events(logdir: str) -> None:
    """Deletes the event files in `logdir` (not in its sub-directories); nothing else is touched."""
    for path in tf.io.gfile.glob(f"{logdir.rstrip('/')}/{EVENT_FILE_PATTERN}"):
        tf.io.gfile.remove(path)


def last_step(logdir: str) -> int | None:
    """The highest step of any scalar point in `logdir`'s event files; None if there is none."""
    steps = [step for points in read_scalars(logdir).values() for step, _ in points]
    return max(steps) if steps else None
