"""Task layer: label policies, harmonisation, strata, and the CLI's errors on bad flags."""
import numpy as np
import pytest
import tensorflow as tf

from benchmark import run
from benchmark.harness import data, tasks
from shared_helpers import parsed_flags

_STATE = {"positive": 0, "negative": 1, "uncertain": 2, "blank": 3}


def _chexpert_labels(**states):
    keys = ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion")
    return {"labels": {k: tf.constant(_STATE[states.get(k, "blank")], tf.int64) for k in keys},
            "path": tf.constant("p"), "patient_id": tf.constant("patient00001")}


@pytest.mark.parametrize("policy,expected", [
    ("u_ones", [1, 0, 1, 0, 0]),
    ("u_zeros", [1, 0, 0, 0, 0]),
    ("u_ignore", [1, 0, np.nan, 0, 0]),
])
def test_uncertainty_policies(policy, expected):
    task = tasks.get_task("cxr", tasks.TaskOptions(uncertainty=policy))
    ex = _chexpert_labels(atelectasis="positive", cardiomegaly="negative",
                          consolidation="uncertain", edema="blank")
    label = task.train.to_meta(ex)["label"].numpy()
    np.testing.assert_array_equal(label, np.array(expected, np.float32))


def test_nih_maps_effusion_to_pleural_effusion():
    task = tasks.get_task("cxr")
    (source,) = task.test_sources["shifted"]
    keys = ("atelectasis", "cardiomegaly", "consolidation", "edema", "effusion", "mass")
    ex = {"labels": {k: tf.constant(k in ("effusion", "mass")) for k in keys},
          "image_index": tf.constant("00000001_000.png"), "patient_id": tf.constant(1)}
    meta = source.to_meta(ex)
    np.testing.assert_array_equal(meta["label"].numpy(), [0, 0, 0, 0, 1])
    assert meta["group_id"].numpy() == b"1"


def test_derm_harmonisation_and_dropped_classes():
    task = tasks.get_task("derm")
    ham = task.train
    names = tasks.HAM_DIAGNOSES
    kept = [bool(ham.keep({"diagnosis": tf.constant(i)})) for i in range(len(names))]
    assert dict(zip(names, kept)) == {"akiec": True, "bcc": True, "bkl": True, "df": False,
                                      "mel": True, "nv": True, "vasc": False}
    (pad,) = task.test_sources["shifted"]
    for i, name in enumerate(tasks.PAD_DIAGNOSES):
        ex = {"diagnosis": tf.constant(i), "img_id": tf.constant("x"), "patient_id": tf.constant("PAT_1")}
        label = pad.to_meta(ex)["label"].numpy()
        expected = {"ACK": 0, "SCC": 0, "BCC": 1, "SEK": 2, "MEL": 3, "NEV": 4}[name]
        assert label.argmax() == expected and label.sum() == 1


def test_class_lists_match_builders():
    from tfds_builders.derm_ham10000 import derm_ham10000_dataset_builder as ham
    from tfds_builders.derm_pad_ufes20 import derm_pad_ufes20_dataset_builder as pad
    assert tuple(ham.DIAGNOSES) == tasks.HAM_DIAGNOSES
    assert tuple(pad.DIAGNOSES) == tasks.PAD_DIAGNOSES


def test_group_strata_constant_within_group_and_rarest_class():
    labels = np.array([[1, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], np.float32)
    meta = data.Meta(np.array(["a", "b", "c", "d"]), np.array(["g1", "g1", "g2", "g3"]), labels)
    strata = data.group_strata(meta, "multilabel")
    assert strata[0] == strata[1] == "0"  # class 0 is rarer than class 4
    assert strata[2] == "none" and strata[3] == "4"
    onehot = np.eye(5, dtype=np.float32)[[2, 2, 4]]
    meta = data.Meta(np.array(["a", "b", "c"]), np.array(["l1", "l1", "l2"]), onehot)
    assert list(data.group_strata(meta, "multiclass")) == ["2", "2", "4"]


@pytest.mark.parametrize("argv,message", [
    (["--task=mri"], "--task=mri"),
    (["--method=nope"], "--method=nope"),
    (["--method=os.path:join"], "not a subclass"),
    (["--label_fractions=0,10"], "--label_fractions"),
    (["--label_fractions=abc"], "--label_fractions"),
    (["--preset=huge"], "--preset=huge"),
    (["--backbone=vgg-16"], "--backbone=vgg-16"),
    (["--eval_modes=finetune,knn"], "--eval_modes"),
    (["--seeds=0,0"], "--seeds"),
    (["--uncertainty=u_maybe"], "--uncertainty"),
    (["--method=baselines.examples.minimal_method:RotationPrediction"], "--name="),
    (["--method=saved:/nonexistent/encoder.keras"], "no such file"),
])
def test_cli_rejects_bad_flags(argv, message):
    with (parsed_flags(["benchmark.run", *argv]),
          pytest.raises(ValueError, match=message.replace("(", r"\("))):
        run.config_from_flags()


def test_parse_backbone():
    assert run.parse_backbone("resnet_v1-50x2").depth == 50
    assert run.parse_backbone("resnet_v1-50x2").width == 2
    assert run.parse_backbone("resnet_v1-18-small").small_stem
    assert run.parse_backbone("bit-101").family == "bit"
