"""Your own data as a task (issue 25): the folder format (task.json keys, both kinds, with and
without shift and split column), every bad input in one line with nothing built, and one folder
run end to end (MICLe and its control, in-distribution and shifted) with group-disjoint splits,
deterministic reruns, a leaderboard page and rows that find their folder."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from benchmark import run as run_cmd
from benchmark.board import leaderboard, report
from benchmark.harness import data, results, runner, scoring, tasks
from benchmark.harness.presets import get_preset
from tfds_builders.folder_task import spec
from shared_helpers import parsed_flags
from tfds_builders.synthetic import folder as synthetic_folder

SMOKE = get_preset("smoke")


def _write(path, **kwargs):
    kwargs = {"num_patients": 20, "num_shifted_patients": 8, "image_size": 64, **kwargs}
    return synthetic_folder.write_folder(path, **kwargs)


def _edit_task(root, **changes):
    task = json.loads((root / "task.json").read_text())
    task.update(changes)
    (root / "task.json").write_text(json.dumps(task))


# ------------------------------------------------------------------------------------------ format

@pytest.mark.parametrize("kind", ["multilabel", "multiclass"])
@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("split_column", [True, False])
def test_the_format_gives_the_task_it_states(tmp_path, kind, shift, split_column):
    root = _write(tmp_path / "f", kind=kind, shift=shift, split_column=split_column,
                  name=f"t_{kind}_{int(shift)}{int(split_column)}")
    task = tasks.get_task(f"folder:{root}")
    assert task.name == f"t_{kind}_{int(shift)}{int(split_column)}" and task.kind == kind
    assert task.class_names == synthetic_folder.FINDINGS
    assert task.primary_metric == {"multilabel": "mean_auc", "multiclass": "top1"}[kind]
    assert task.test_sets == (("in_distribution", "shifted") if shift else ("in_distribution",))
    assert task.holdout_test_from_train is not split_column
    assert (task.validation is not None) is split_column
    assert task.bags == ("case", "study") and task.options.bag == "study"
    folder = spec.read_folder(root)
    assert folder.splits == (("train", "validation", "test") if split_column else ("train",)) + (
        ("shifted",) if shift else ())
    kept = ("age", "sex", "licence") if shift else ("site", "age", "sex", "licence")
    assert folder.metadata_columns == kept  # columns task.json does not name are metadata
    assert task.folder.folder == str(root) and len(task.folder.images) == 64
    for name in ("primary_metric", "bag_column"):  # the optional keys
        assert name in spec.KEYS


def test_optional_keys_primary_metric_bag_column_and_uncertainty(tmp_path):
    root = _write(tmp_path / "f", kind="multiclass")
    _edit_task(root, primary_metric="balanced_accuracy", bag_column=None)
    task = tasks.get_task(f"folder:{root}")
    assert task.primary_metric == "balanced_accuracy" and task.bags == ("case",)
    assert task.options.bag == "case"
    assert set(spec.PRIMARY_METRICS["multiclass"]) <= set(scoring.base_metric_names("multiclass", "a"))
    label = tf.constant([1.0, 0.0, spec.UNCERTAIN, np.nan])
    ex = {"label": label, "file_name": tf.constant("a.png"), "group_id": tf.constant("p")}
    root = _write(tmp_path / "g")
    for policy, third in (("u_ones", 1.0), ("u_zeros", 0.0)):
        task = tasks.get_task(f"folder:{root}", tasks.TaskOptions(uncertainty=policy))
        assert task.train.to_meta(ex)["label"].numpy()[2] == third
    ignored = tasks.get_task(f"folder:{root}", tasks.TaskOptions(uncertainty="u_ignore"))
    assert np.isnan(ignored.train.to_meta(ex)["label"].numpy()[2:]).all()


def test_the_json_schema_names_the_keys_the_checks_read():
    schema = json.loads((spec.SCHEMA).read_text())
    assert tuple(schema["properties"]) == spec.KEYS
    assert schema["required"] == list(spec.REQUIRED_KEYS) and schema["additionalProperties"] is False
    assert schema["properties"]["name"]["pattern"] == f"^{spec.NAME_PATTERN.pattern}$"


# ------------------------------------------------------------------------------------------ bad inputs

@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("base") / "f", split_column=True)


def _lines(root):
    return (root / "metadata.csv").read_text().splitlines()


def _set_cell(root, line, column, value):
    lines = _lines(root)
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return fields


def _first_line(root, predicate):
    header = _lines(root)[0].split(",")
    return next(n for n, text in enumerate(_lines(root), start=1)
                if n > 1 and predicate(dict(zip(header, text.split(",")))))


def _second_image_line(root, predicate):
    """The line of the second image of the first patient with several images meeting `predicate`."""
    header = _lines(root)[0].split(",")
    seen = {}
    for n, text in enumerate(_lines(root)[1:], start=2):
        row = dict(zip(header, text.split(",")))
        if predicate(row):
            if row["patient_id"] in seen:
                return n, seen[row["patient_id"]]
            seen[row["patient_id"]] = n
    raise AssertionError("no patient with two images")


def _column_absent(root):
    _edit_task(root, group_column="patient")
    return ('<dir>/task.json: "group_column" \'patient\' is not a column of <dir>/metadata.csv (its '
            "columns: file_name, patient_id, study_id, site, split, opacity, nodule, effusion, age, "
            "sex, licence)")


def _missing_file(root):
    _set_cell(root, 2, "file_name", "images/A/nope.png")
    return "<dir>/metadata.csv:2: file_name 'images/A/nope.png': no such file under <dir>"


def _undecodable(root):
    name = _lines(root)[2].split(",")[0]
    (root / name).write_bytes(b"not an image")
    return (f"<dir>/metadata.csv:3: file_name '{name}' does not decode as an image (cannot identify "
            f"image file '<dir>/{name}')")


def _group_split(root):
    line, first = _second_image_line(root, lambda r: r["split"] == "train")
    _set_cell(root, line, "split", "test")
    patient = _lines(root)[line - 1].split(",")[1]
    return (f"<dir>/metadata.csv:{line}: group '{patient}' has split 'test' here but 'train' on "
            f"<dir>/metadata.csv:{first}; a group's rows must share their split")


def _group_site(root):
    line, first = _second_image_line(root, lambda r: r["site"] == "B")
    _set_cell(root, line, "site", "C")
    patient = _lines(root)[line - 1].split(",")[1]
    return (f"<dir>/metadata.csv:{line}: group '{patient}' has site 'C' here but 'B' on "
            f"<dir>/metadata.csv:{first}; a group's rows must share their site")


def _label_outside(root):
    _set_cell(root, 4, "nodule", "2")
    return "<dir>/metadata.csv:4: nodule is '2'; expected 1, 0, -1 (uncertain) or blank (unknown)"


def _class_missing(root):
    header = _lines(root)[0].split(",")
    for n, text in enumerate(_lines(root)[1:], start=2):
        if dict(zip(header, text.split(",")))["split"] == "validation":
            _set_cell(root, n, "nodule", "0")
    return "<dir>/task.json: \"label_columns\": 'nodule' has no positive (1) example in the validation split"


def _shift_both(root):
    _edit_task(root, shift={"column": "site", "in_distribution": ["A", "B"], "shifted": ["B", "C"]})
    return ('<dir>/task.json: "shift": \'B\' is listed in both shift.in_distribution and '
            "shift.shifted; a site is either in-distribution or shifted")


def _empty_split(root):
    header = _lines(root)[0].split(",")
    for n, text in enumerate(_lines(root)[1:], start=2):
        if dict(zip(header, text.split(",")))["split"] == "validation":
            _set_cell(root, n, "split", "train")
    return ("<dir>/task.json: \"split_column\" 'split': no row of metadata.csv is in the validation "
            "split; every split needs rows")


def _bad_name(root):
    _edit_task(root, name="My CXR")
    return ("<dir>/task.json: \"name\": 'My CXR' is not allowed; expected 1-40 characters from a-z "
            "0-9 _ (it names rows, output dirs and leaderboards)")


def _leaves(root):
    (root.parent / "outside.png").write_bytes((root / _lines(root)[1].split(",")[0]).read_bytes())
    _set_cell(root, 2, "file_name", "../outside.png")
    return ("<dir>/metadata.csv:2: file_name '../outside.png' leaves the folder; it must be a "
            "relative path inside <dir>")


BAD_INPUTS = {"column_absent": _column_absent, "missing_file": _missing_file,
              "undecodable_file": _undecodable, "group_split_disagrees": _group_split,
              "group_site_disagrees": _group_site, "label_outside": _label_outside,
              "class_without_examples": _class_missing, "shift_value_in_both": _shift_both,
              "empty_split": _empty_split, "bad_name": _bad_name, "path_leaves_folder": _leaves}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_each_bad_input_is_one_line_and_nothing_is_built(base_folder, tmp_path, case):
    root = tmp_path / "f"
    shutil.copytree(base_folder, root)
    expected = BAD_INPUTS[case](root).replace("<dir>", str(root))
    assert spec.problems(root, decode=True) == [expected]
    cfg = data.DataConfig(data_dir=str(tmp_path / "data"), manual_dir=None, resolution="64px")
    with pytest.raises(ValueError) as raised:
        data.prepare(tasks.get_task(f"folder:{root}"), cfg)  # an undecodable file: while building
    assert str(raised.value) == expected
    assert not list((tmp_path / "data").rglob("dataset_info.json"))


def test_a_bad_folder_is_a_flag_error_of_benchmark_run(base_folder, tmp_path):
    root = tmp_path / "f"
    shutil.copytree(base_folder, root)
    expected = _label_outside(root).replace("<dir>", str(root))
    _set_cell(root, 5, "opacity", "yes")
    with parsed_flags(["benchmark.run", f"--task=folder:{root}"]), pytest.raises(ValueError) as raised:
        run_cmd.config_from_flags()
    assert str(raised.value) == (f"{expected} (and 1 more: python -m benchmark.data_check "
                                 f"--task=folder:{root} lists them)")


# ------------------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """MICLe and its control on a generated folder (shifted sites, bags of studies, a split
    column), finetune and linear, 100 % of the labels, seed 0."""
    tmp = tmp_path_factory.mktemp("folder_run")
    root = synthetic_folder.write_folder(tmp / "my_cxr", num_patients=30, num_shifted_patients=10,
                                         image_size=64, split_column=True)
    preset = dataclasses.replace(SMOKE, label_fractions=(100.0,), eval_modes=("finetune", "linear"))
    cfg = runner.RunConfig(
        method="micle", task=tasks.get_task(f"folder:{root}"), preset=preset,
        data=data.DataConfig(data_dir=str(tmp / "data"), manual_dir=None, resolution=preset.resolution),
        output_dir=str(tmp / "out"), progress=False, control="random_init")
    rows = runner.run(cfg)
    return cfg, rows, runner.control_rows(cfg)


def test_a_folder_runs_end_to_end_with_its_control(folder_run):
    cfg, rows, controls = folder_run
    assert len(rows) == len(controls) == 2
    for row in rows + controls:
        results.validate_row(row)
        assert row["task"] == "my_cxr" and row["synthetic"] is True
        assert row["config"]["folder_task"] == cfg.task.folder.record()
        assert set(row["config"]["folder_task"]) == {"folder", "task_json", "metadata_csv", "images"}
        assert set(row["metrics"]) == {"in_distribution", "shifted"}
        for result in row["metrics"].values():
            assert result["primary"] == "mean_auc" and os.path.isfile(
                os.path.join(cfg.output_dir, result["predictions"]))
    assert "finetune" in {r["eval_mode"] for r in rows} and "linear" in {r["eval_mode"] for r in rows}
    table = report.summary_table(rows, controls, output_dir=cfg.output_dir)
    assert sum(line.startswith("my_cxr micle") for line in table.splitlines()) == 4
    assert all("—" not in line for line in table.splitlines() if line.startswith("my_cxr"))


def test_splits_are_group_disjoint_and_shifted_groups_only_test(folder_run):
    cfg, _, _ = folder_run
    builders = data.prepare(cfg.task, cfg.data)
    splits = data.split_task(builders, cfg.task, validation_fraction=0.1, test_fraction=0.2)
    parts = {"train": splits.train, "validation": splits.validation, **splits.tests}
    groups = {name: set(meta.group_ids) for name, meta in parts.items()}
    assert all(groups.values())
    for a in groups:
        for b in groups:
            assert a == b or not groups[a] & groups[b], (a, b)
    folder = spec.read_folder(cfg.task.folder.folder)
    assert groups["shifted"] == {r.group_id for r in folder.rows if r.site in ("B", "C")}
    for name in ("train", "validation"):  # the split column's, not a hash's
        assert groups[name] == {r.group_id for r in folder.split_rows(name)}
    assert groups["in_distribution"] == {r.group_id for r in folder.split_rows("test")}
    hashed = dataclasses.replace(cfg.task, validation=None, holdout_test_from_train=True)
    masks = data.split_task(builders, hashed, validation_fraction=0.2, test_fraction=0.2)
    hashed_groups = [set(m.group_ids) for m in (masks.train, masks.validation, masks.tests["in_distribution"])]
    assert sum(map(len, hashed_groups)) == len(set().union(*hashed_groups))  # without a split column
    bags = {ex["group_id"].decode() for ex in data.pretrain_groups(
        builders, cfg.task, groups["train"]).as_numpy_iterator()}
    assert {b.split("/")[0] for b in bags} == groups["train"] and len(bags) > len(groups["train"])


def test_a_cell_reruns_byte_identically(folder_run, tmp_path):
    cfg, _, controls = folder_run
    [stored] = [r for r in controls if r["eval_mode"] == "finetune"]
    again = runner.run(dataclasses.replace(
        runner.control_config(cfg), output_dir=str(tmp_path / "again"),
        preset=dataclasses.replace(runner.control_config(cfg).preset, eval_modes=("finetune",))))
    for name, result in stored["metrics"].items():
        assert (open(os.path.join(cfg.output_dir, result["predictions"]), "rb").read()
                == open(tmp_path / "again" / again[0]["metrics"][name]["predictions"], "rb").read())


def test_leaderboard_page_and_rows_whose_folder_moved(folder_run, tmp_path):
    cfg, _, _ = folder_run
    results_file = os.path.join(cfg.output_dir, "results.jsonl")
    written = leaderboard.regenerate([results_file], tmp_path / "board")
    assert tmp_path / "board" / "my_cxr.md" in written
    page = (tmp_path / "board" / "my_cxr.md").read_text()
    assert "micle" in page and "SYNTHETIC" in page
    moved = tmp_path / "moved"
    shutil.copytree(cfg.task.folder.folder, moved)
    row = results.ResultsStore(results_file).rows()[0]
    elsewhere = json.loads(json.dumps(row))
    elsewhere["config"]["folder_task"]["folder"] = str(tmp_path / "gone")
    tasks._FOLDERS.pop("my_cxr")
    with pytest.raises(ValueError, match=r"task 'my_cxr' is a folder task recorded at .*/gone: "
                       r"--task=folder:.*/gone: no such directory; pass --task=folder:<its folder>"):
        tasks.task_of_row(elsewhere)
    tasks.get_task(f"folder:{moved}")  # what --task=folder:<dir> of the commands does
    assert tasks.task_of_row(elsewhere).folder.folder == str(moved)
    _edit_task(moved, primary_metric="mean_auc")  # another task.json
    with pytest.raises(ValueError, match="is not the task.json the row was computed with"):
        tasks.task_of_row(elsewhere)
    tasks.get_task(f"folder:{cfg.task.folder.folder}")
