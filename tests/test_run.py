"""End to end on the synthetic real-format sets: run → rows, skip finished cells, resume."""
import collections
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from baselines import registry
from benchmark.harness import data, results, runner
from benchmark.harness.presets import get_preset
from benchmark.harness.tasks import TaskOptions, get_task
from shared_helpers import copy_run, parsed_flags, smoke_config

SMOKE = get_preset("smoke")


_config = smoke_config  # (tmp_path, task, method, data_dir=None, **preset_changes)


def _check_rows(rows, cfg, primary):
    for row in rows:
        results.validate_row(row)
        assert set(row["metrics"]) == {"in_distribution", "shifted"}
        for test_set, result in row["metrics"].items():
            assert result["primary"] == primary
            value = result["values"][primary]
            assert 0.0 <= value <= 1.0
            lo, hi = result["ci95"][primary]
            assert 0.0 <= lo <= hi <= 1.0
            ids, groups, labels, scores, names = results.read_predictions(
                os.path.join(cfg.output_dir, result["predictions"]))
            assert len(ids) == result["n_examples"] and list(names) == list(cfg.task.class_names)
            assert results.examples_fingerprint(ids, labels) == result["fingerprint"]
        assert row["synthetic"] is True and row["data_fingerprint"]


def test_pretraining_bags_regroup_the_cases_images(tmp_path, smoke_data_dir):
    """--bag: `study` gives one bag per study, `frontal` the frontal images of each case; every
    bag's images come from one training patient; the choice is recorded in the row's config."""
    cfg = _config(tmp_path, "cxr", "micle", smoke_data_dir)
    builders = data.prepare(cfg.task, cfg.data)
    cases = builders["pretrain"].as_dataset(split="train", shuffle_files=False)
    truth = {}
    for ex in cases.as_numpy_iterator():
        images = ex["images"]
        truth[ex["patient_id"].decode()] = [(s.decode(), int(v)) for s, v in zip(images["study_id"], images["view"])]
    train = set(sorted(truth)[::2])

    def bags(bag):
        task = get_task("cxr", TaskOptions(bag=bag))
        return {ex["group_id"].decode(): len(ex["images"])
                for ex in data.pretrain_groups(builders, task, train).as_numpy_iterator()}

    assert bags("case") == {p: len(v) for p, v in truth.items() if p in train}
    studies = collections.Counter(s for p in train for s, _ in truth[p])
    assert bags("study") == dict(studies) and len(studies) > len(train)
    frontal = {p: sum(v == 0 for _, v in truth[p]) for p in train}
    assert bags("frontal") == {p: n for p, n in frontal.items() if n}
    assert sum(frontal.values()) < sum(len(truth[p]) for p in train)  # some laterals dropped
    record = runner._config_record(dataclasses.replace(cfg, task=get_task("cxr", TaskOptions(bag="study"))),
                                   registry.get_method("micle"))
    assert record["task_options"]["bag"] == "study"
    assert runner._config_record(cfg, registry.get_method("micle"))["task_options"]["bag"] == "case"


@pytest.mark.parametrize("task, bag, message", [
    ("derm", "study", r"--bag=study with --task=derm: expected one of \('case',\)"),
    ("cxr", "lesion", r"--bag=lesion: expected one of \('case', 'study', 'frontal'\)"),
])
def test_unknown_or_unsupported_bags_are_refused(task, bag, message):
    with pytest.raises(ValueError, match=message):
        get_task(task, TaskOptions(bag=bag))


def test_derm_simclr_linear(tmp_path, derm_simclr_runs):
    """The linear probe of the shared run's finished SimCLR stage (its pretraining is not repeated)."""
    shared = derm_simclr_runs.first.cfg
    cfg = copy_run(dataclasses.replace(shared, control=None, preset=dataclasses.replace(
        shared.preset, eval_modes=("linear",))), tmp_path / "out", only="pretrain")
    rows = runner.run(cfg)
    assert len(rows) == 1 and rows[0]["eval_mode"] == "linear"
    _check_rows(rows, cfg, "top1")
    assert "macro_auc" in rows[0]["metrics"]["shifted"]["values"]


def test_cli_run_killed_mid_pretraining_resumes_to_the_uninterrupted_runs_bytes(tmp_path, smoke_data_dir):
    """`python -m benchmark.run` killed during pretraining resumes from its checkpoint on rerun, and
    ends with the encoder, the prediction files (byte for byte) and the rows, fine-tuning search
    included, of an uninterrupted run of the same entry point in another process (this test's own,
    with its history of earlier tests). In bfloat16 (float32 is the in-process determinism tests'
    precision): determinism holds within a precision, across processes. The cxr MICLe rows are
    complete and valid, and a cell's labelled patients nest in the larger fractions' and are
    never validation or test patients."""
    import signal
    import subprocess
    import sys
    import time

    from baselines import checkpoint
    from benchmark import run

    out, whole = tmp_path / "out", tmp_path / "whole"
    argv = [sys.executable, "-m", "benchmark.run", "--method=micle", "--task=cxr", "--preset=smoke",
            "--pretrain_steps=20", "--seeds=0", "--label_fractions=50", "--eval_modes=finetune,linear",
            "--precision=bfloat16", "--verbosity=0", "--control=none", f"--data_dir={smoke_data_dir}",
            "--noprogress"]
    stage = Path("pretrain") / "cxr_micle"
    meta_file = out / stage / "meta.json"
    proc = subprocess.Popen(argv + [f"--output_dir={out}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if meta_file.exists() and json.loads(meta_file.read_text())["steps_done"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed mid-pretraining"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = json.loads(meta_file.read_text())
    assert not killed_at["finished"] and 2 <= killed_at["steps_done"] < 20
    assert not (out / "results.jsonl").exists()

    done = subprocess.run(argv + [f"--output_dir={out}"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "micle: resumed from" in done.stderr
    final = json.loads(meta_file.read_text())
    assert final["finished"] and final["steps_done"] == 20

    with parsed_flags(argv[2:] + [f"--output_dir={whole}"]) as positional:
        run.main(positional)
    rows = {results.cell_key(r): r for r in results.ResultsStore(out / "results.jsonl").rows()}
    whole_rows = {results.cell_key(r): r for r in results.ResultsStore(whole / "results.jsonl").rows()}
    assert sorted(rows) == sorted(whole_rows) and sorted((k[3], k[4]) for k in rows) == [
        ("finetune", 0.5), ("linear", 0.5)]
    volatile = ("created", "wall_seconds")
    for key, row in rows.items():
        assert (row["method"], row["seed"], row["deterministic"]) == ("micle", 0, True)
        assert row["config"]["precision"] == {"requested": "bfloat16", "used": "bfloat16", "reason": "requested"}
        for test_set, result in row["metrics"].items():
            assert (out / result["predictions"]).read_bytes() == (
                whole / whole_rows[key]["metrics"][test_set]["predictions"]).read_bytes(), test_set
        # the rows are equal, the fine-tuning search point for point included
        assert ({k: v for k, v in row.items() if k not in volatile}
                == {k: v for k, v in whole_rows[key].items() if k not in volatile})
    cfg = dataclasses.replace(_config(tmp_path, "cxr", "micle", smoke_data_dir), output_dir=str(out))
    _check_rows(rows.values(), cfg, "mean_auc")
    # The labelled half is the cell's patients' images, within the training patients (nested in
    # the larger fractions) and none of validation or test.
    builders = data.prepare(cfg.task, cfg.data)
    splits = data.split_task(builders, cfg.task, validation_fraction=0.1, test_fraction=0.2)
    assert not set(splits.train.group_ids) & set(splits.validation.group_ids)
    assert not set(splits.train.group_ids) & set(splits.tests["in_distribution"].group_ids)
    half, groups = runner.train_subset(cfg.task, splits, 50.0, 0)
    larger = [runner.train_subset(cfg.task, splits, f, 0)[1] for f in (75.0, 100.0)]
    assert groups < larger[0] < larger[1] == set(splits.train.group_ids)
    assert rows[next(k for k in rows if k[3] == "finetune")]["n_train_examples"] == len(half.example_ids)
    for a, b in zip(checkpoint.load_encoder(str(out / stage)).get_weights(),
                    checkpoint.load_encoder(str(whole / stage)).get_weights()):
        np.testing.assert_array_equal(a, b)


def _fail(*args, **kwargs):
    raise AssertionError("a finished grid prepared data again")


def test_the_control_runs_once_beside_the_method_and_not_with_control_none(tmp_path, monkeypatch,
                                                                          derm_simclr_runs):
    """The shared derm SimCLR run (`derm_simclr_runs`: seed 0 with control=random_init, then, in a
    copy, seeds 0 and 1 without a control); the rerun works on a copy of the first run."""
    from benchmark.board import report

    cfg, rows = derm_simclr_runs.first.cfg, derm_simclr_runs.first.rows
    assert cfg.control == "random_init" and cfg.preset.seeds == (0,)
    store = results.ResultsStore(os.path.join(cfg.output_dir, "results.jsonl"))
    assert [(r["method"], r["seed"]) for r in store.rows()] == [("simclr", 0), ("random_init", 0)]
    [control] = runner.control_rows(cfg)
    assert control["config"]["backbone"] == rows[0]["config"]["backbone"]
    assert control["config"]["method_spec"] == "random_init"
    _check_rows([control], cfg, "top1")
    table = report.summary_table(rows, [control], output_dir=cfg.output_dir)
    lines = [l for l in table.splitlines() if l.startswith("derm   simclr")]
    assert len(lines) == 2 and all("(n=1)" in l and "—" not in l for l in lines)
    assert "control: random_init" in table and "paired patient-level bootstrap" in table

    rerun = copy_run(cfg, tmp_path / "out")
    monkeypatch.setattr(runner.data, "prepare", _fail)  # a rerun computes nothing
    assert runner.run(rerun) == rows
    assert len(results.ResultsStore(os.path.join(rerun.output_dir, "results.jsonl")).rows()) == 2
    monkeypatch.undo()
    more = derm_simclr_runs.extended.cfg
    assert (more.control, more.preset.seeds) == (None, (0, 1))
    store = results.ResultsStore(os.path.join(more.output_dir, "results.jsonl"))
    assert [(r["method"], r["seed"]) for r in store.rows()] == [
        ("simclr", 0), ("random_init", 0), ("simclr", 1)]
    extended = {results.cell_key(r): r for r in store.rows()}
    for row in rows:  # the finished cells were skipped, not computed again, when the grid grew
        assert extended[results.cell_key(row)]["created"] == row["created"]
    assert [(r["method"], r["seed"]) for r in derm_simclr_runs.extended.rows] == [("simclr", 0), ("simclr", 1)]


def test_the_control_is_named_by_its_backbone_unless_it_is_the_presets():
    from baselines.api import BackboneConfig

    base = dataclasses.replace(_config(Path("/nonexistent"), "cxr", "micle"), control="random_init")
    same = runner.control_config(base)
    assert (same.method, same.name, same.preset.backbone) == ("random_init", "random_init",
                                                              SMOKE.backbone)
    assert same.control is None and same.init_checkpoint is None
    wider = BackboneConfig(family="resnet_v1", depth=10, width=0.5, small_stem=False)
    other = runner.control_config(dataclasses.replace(
        base, preset=dataclasses.replace(base.preset, backbone=wider,
                                         pretrain=dataclasses.replace(SMOKE.pretrain, steps=9))))
    assert other.name == "random_init-resnet_v1-10x0.5" and other.preset.backbone == wider
    assert other.preset.pretrain == SMOKE.pretrain  # pretraining settings are not the control's
    bit = runner.control_config(dataclasses.replace(base, method="supervised"))
    assert bit.name.startswith("random_init-bit-") and bit.preset.backbone.family == "bit"
    assert runner.control_config(dataclasses.replace(base, method="random_init")) is None
    assert runner.control_config(dataclasses.replace(base, control=None)) is None
    with pytest.raises(ValueError, match="--name=random_init: the control's rows are named"):
        runner.control_config(dataclasses.replace(base, name="random_init"))
    reseeded = runner.control_config(dataclasses.replace(
        base, preset=dataclasses.replace(base.preset, backbone=wider,
                                         pretrain=dataclasses.replace(SMOKE.pretrain, seed=2))))
    assert reseeded.name == "random_init-resnet_v1-10x0.5-pseed2"
    assert reseeded.preset.pretrain.seed == 2  # the control's weights come from the same seed


def test_a_run_of_the_in_distribution_test_set_needs_no_shifted_source(tmp_path):
    """--test_sets=in_distribution: a manual dir holding only HAM10000 runs, no PAD-UFES-20 is
    read or built, rows hold only in_distribution and record it; the same run asking for every
    test set is the clear missing-folder error; a stored cell of other test sets is not a hit;
    reproduce re-runs the row with its test sets."""
    from benchmark.board import reproduce
    from benchmark.harness.tasks import with_test_sets
    from tfds_builders import synthetic

    manual = tmp_path / "manual"
    synthetic.generate("derm_ham10000", manual, size=SMOKE.synthetic_sizes["derm_ham10000"],
                       image_size=SMOKE.synthetic_image_size)
    cfg = _config(tmp_path, "derm", "random_init", eval_modes=("linear",), label_fractions=(100.0,))
    cfg = dataclasses.replace(cfg, task=with_test_sets(cfg.task, ["in_distribution"]),
                              data=dataclasses.replace(cfg.data, manual_dir=str(manual)))
    [row] = runner.run(cfg)
    results.validate_row(row)
    assert set(row["metrics"]) == {"in_distribution"}
    assert row["config"]["test_sets"] == ["in_distribution"]
    assert list(row["data_build"]) == ["derm_ham10000/64px/1.0.0", "derm_ham10000/lesions_64px/1.0.0"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["derm_ham10000", "downloads"]

    every = dataclasses.replace(cfg, task=get_task("derm"))
    with pytest.raises(ValueError, match=r"\.jsonl:1: cell .* is stored from another configuration "
                       r"\(test_sets: stored \['in_distribution'\] != this run '<missing>'\)"):
        runner.run(every)
    with pytest.raises(FileNotFoundError, match=f"^--manual_dir={manual}: expected a folder "
                       f"{manual}/derm_pad_ufes20 holding the derm_pad_ufes20 download"):
        runner.run(dataclasses.replace(every, output_dir=str(tmp_path / "all")))

    again = reproduce.rerun_config("row", row, data_dir=cfg.data.data_dir,
                                   scratch_dir=str(tmp_path / "scratch"))
    assert again.task.test_sets == ("in_distribution",)
    assert "shifted" not in again.task.test_sources


@pytest.mark.parametrize("value, message", [
    ("", "--test_sets=: empty value; give comma-separated test sets from ('in_distribution', "
         "'shifted'), or leave the flag out for all of them"),
    ("ood", "--test_sets=ood: unknown test set 'ood' for --task=derm; expected some of "
            "('in_distribution', 'shifted')"),
    ("shifted,shifted", "--test_sets=shifted,shifted: duplicate values"),
])
def test_bad_test_sets_are_one_line_errors(value, message):
    from benchmark.harness.tasks import with_test_sets

    with pytest.raises(ValueError) as e:
        with_test_sets(get_task("derm"), value.split(","))
    assert str(e.value) == message
