"""Result rows, the atomic results store, prediction files and provenance helpers."""
import copy
import errno
import importlib.util
import json
import math
import os
import platform
import shutil
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

from benchmark.harness import results
from medssl_common import provenance
from shared_helpers import fork, wait

HEX = "ab" * 32
CLASSES = ["Atelectasis", "Pleural Effusion"]


def _row(**changes):
    test_set = {
        "primary": "mean_auc",
        "values": {"mean_auc": 0.8, "auc/Atelectasis": 0.75, "auc/Pleural Effusion": 0.85},
        "ci95": {"mean_auc": [0.7, 0.9], "auc/Atelectasis": [0.6, 0.85],
                 "auc/Pleural Effusion": [0.8, 0.9]},
        "n_examples": 20, "n_groups": 12, "fingerprint": HEX,
        "predictions": "predictions/cxr_simclr_cpu_finetune_0.1_0_in_distribution.csv",
        "collapsed": None,
    }
    row = {
        "schema": 2, "task": "cxr", "method": "simclr", "preset": "cpu", "eval_mode": "finetune",
        "label_fraction": 0.1, "seed": 0,
        "metrics": {"in_distribution": test_set, "shifted": copy.deepcopy(test_set)},
        "config": {"backbone": {"depth": 18}}, "code_version": "unknown",
        "packages": {"numpy": "2.0.0", "python": "3.11.0"}, "data_fingerprint": HEX,
        "data_build": {"cxr_chexpert/64px/1.0.0": HEX}, "code_digest": HEX, "deterministic": True,
        "machine": {"arch": "x86_64", "cpu": "Xeon", "isa": ["avx2"], "onednn": "1"},
        "synthetic": True, "created": "2025-01-31T12:00:00+00:00", "wall_seconds": 1.5,
        "pretrain_summary": {"method": "simclr", "steps": 4, "curve": None},
    }
    row.update(changes)
    if row["eval_mode"] == "finetune":
        row.setdefault("finetune_selection", SELECTION)
    return row


SELECTION = {  # a finetune row's schedule search (benchmark.harness.finetune.Trainer.search)
    "source": "preset", "metric": "mean_auc", "eval_points": 2,
    "schedules": [{"steps": 4, "learning_rate": 0.05, "batch_size": 16, "warmup_steps": 1,
                   "decay_boundaries": [2, 3], "mixup_alpha": 0.0, "eval_steps": [2, 4],
                   "validation": [0.6, None]}],
    "chosen": {"schedule": 0, "step": 2, "validation": 0.6}, "n_validation_examples": 9}


def test_valid_row_and_cell_key():
    results.validate_row(_row())
    results.validate_row(_row(n_train_examples=40, n_train_groups=25))
    with pytest.raises(ValueError, match="'n_train_groups'"):
        results.validate_row(_row(n_train_examples=40, n_train_groups=41))
    assert results.cell_key(_row()) == ("cxr", "simclr", "cpu", "finetune", 0.1, 0)
    with pytest.raises(ValueError, match="'seed'"):
        results.cell_key({k: v for k, v in _row().items() if k != "seed"})


def test_schema_1_rows_are_refused_with_what_they_lack():
    legacy = {k: v for k, v in _row(schema=1).items()
              if k not in ("data_build", "code_digest", "machine")}
    with pytest.raises(ValueError, match="^result row: schema 1 .* lacks what a re-run and an "
                                         "audit need .*recompute it with the current code$"):
        results.validate_row(legacy)


def _set(row, dotted, value):
    *path, last = dotted.split(".")
    target = row
    for p in path:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return row


@pytest.mark.parametrize("dotted, value, named", [
    ("task", KeyError, "'task'"),
    ("extra", 1, "'extra'"),
    ("schema", 3, "'schema'"),
    ("data_build", KeyError, "'data_build'"),
    ("deterministic", KeyError, "'deterministic'"),
    ("code_digest", KeyError, "'code_digest'"),
    ("code_digest", "abc", "'code_digest'"),
    ("machine", KeyError, "'machine'"),
    ("machine", {"arch": "x86_64"}, "'machine'"),
    ("data_build", {}, "'data_build'"),
    ("data_build", {"cxr_chexpert/64px/1.0.0": "abc"}, "'data_build'"),
    ("eval_mode", "probe", "'eval_mode'"),
    ("label_fraction", 0.0, "'label_fraction'"),
    ("label_fraction", 1.5, "'label_fraction'"),
    ("seed", 1.0, "'seed'"),
    ("seed", True, "'seed'"),
    ("synthetic", "yes", "'synthetic'"),
    ("n_train_examples", 0, "'n_train_examples'"),
    ("n_train_groups", 0, "'n_train_groups'"),
    ("created", "2025-01-31T12:00:00", "'created'"),
    ("created", "2025-01-31T12:00:00+02:00", "'created'"),
    ("wall_seconds", -1, "'wall_seconds'"),
    ("data_fingerprint", "abc", "'data_fingerprint'"),
    ("packages", {"numpy": 2}, "'packages'"),
    ("metrics", {}, "'metrics'"),
    ("metrics.shifted.primary", "top1", "'metrics.shifted.primary'"),
    ("metrics.shifted.values.mean_auc", "0.8", "'metrics.shifted.values.mean_auc'"),
    ("metrics.shifted.values.mean_auc", float("inf"), "'metrics.shifted.values.mean_auc'"),
    ("metrics.shifted.ci95.mean_auc", [0.9, 0.7], "'metrics.shifted.ci95.mean_auc'"),
    ("metrics.shifted.ci95.mean_auc", [0.7], "'metrics.shifted.ci95.mean_auc'"),
    ("metrics.shifted.ci95.top1", [0.7, 0.8], "'metrics.shifted.ci95'"),
    ("metrics.shifted.n_groups", 21, "'metrics.shifted.n_groups'"),
    ("metrics.shifted.n_examples", 0, "'metrics.shifted.n_examples'"),
    ("metrics.shifted.fingerprint", "x", "'metrics.shifted.fingerprint'"),
    ("metrics.shifted.predictions", "/abs/p.csv", "'metrics.shifted.predictions'"),
    ("metrics.shifted.predictions", "../p.csv", "'metrics.shifted.predictions'"),
    ("metrics.shifted.n_examples", KeyError, "'metrics.shifted.n_examples'"),
    ("metrics.shifted.extra", 1, "'metrics.shifted.extra'"),
])
def test_validate_row_names_bad_key(dotted, value, named):
    with pytest.raises(ValueError) as info:
        results.validate_row(_set(_row(), dotted, value))
    assert named in str(info.value)


def test_validate_row_accepts_undefined_metrics():
    row = _row()
    row["metrics"]["shifted"]["values"]["auc/Atelectasis"] = float("nan")
    row["metrics"]["shifted"]["ci95"]["auc/Atelectasis"] = [float("nan"), float("nan")]
    results.validate_row(row)
    row["metrics"]["shifted"]["values"]["auc/Atelectasis"] = None
    row["metrics"]["shifted"]["ci95"]["auc/Atelectasis"] = [None, None]
    results.validate_row(row)


def test_store_appends_sorted_rows_and_reports_done(tmp_path):
    store = results.ResultsStore(tmp_path / "out" / "results.jsonl")
    assert store.rows() == [] and not store.done(results.cell_key(_row()))
    first = _row(seed=np.int64(0), wall_seconds=np.float32(2.5))
    first["metrics"]["shifted"]["values"]["auc/Atelectasis"] = np.float64("nan")
    store.append(first)
    store.append(_row(seed=1))
    lines = store.path.read_text().splitlines()
    assert len(lines) == 2 and list(json.loads(lines[0])) == sorted(_row())
    rows = store.rows()
    assert [r["seed"] for r in rows] == [0, 1]
    assert rows[0]["wall_seconds"] == 2.5
    assert rows[0]["metrics"]["shifted"]["values"]["auc/Atelectasis"] is None
    assert store.done(("cxr", "simclr", "cpu", "finetune", 0.1, 1))
    assert not store.done(("cxr", "simclr", "cpu", "linear", 0.1, 1))
    with pytest.raises(ValueError, match="already stored"):
        store.append(_row(seed=1))
    with pytest.raises(ValueError, match="'eval_mode'"):
        store.append(_row(seed=2, eval_mode="probe"))
    assert store.path.read_text().splitlines() == lines
    assert sorted(os.listdir(store.path.parent)) == ["results.jsonl"]  # no empty lock file left


def test_store_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
    store = results.ResultsStore(tmp_path / "results.jsonl")
    store.append(_row(seed=0))
    before = store.path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before replace")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.append(_row(seed=1))
    assert store.path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["results.jsonl"]


def test_store_survives_process_killed_between_write_and_replace(tmp_path):
    store = results.ResultsStore(tmp_path / "results.jsonl")
    store.append(_row(seed=0))
    before = store.path.read_bytes()

    def killed_at_the_replace():  # in a forked child (already holding this process's imports)
        os.replace = lambda src, dst: os._exit(9)  # killed after the temp file is complete
        results.ResultsStore(store.path).append(_row(seed=1))

    assert wait(fork(killed_at_the_replace)) == 9
    assert store.path.read_bytes() == before
    assert [r["seed"] for r in store.rows()] == [0]
    store.append(_row(seed=1))  # the leftover temp file does not get in the way
    assert [r["seed"] for r in store.rows()] == [0, 1]


def test_store_tolerates_truncated_last_line_and_repairs_it(tmp_path):
    store = results.ResultsStore(tmp_path / "results.jsonl")
    store.append(_row(seed=0))
    store.append(_row(seed=1))
    full = json.dumps(_row(seed=2), sort_keys=True)
    with open(store.path, "a") as f:
        f.write(full[: len(full) // 2])
    with pytest.warns(RuntimeWarning, match=r"results.jsonl:3: ignoring truncated last line"):
        assert [r["seed"] for r in store.rows()] == [0, 1]
    with pytest.warns(RuntimeWarning):
        store.append(_row(seed=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["seed"] for r in store.rows()] == [0, 1, 2]


def test_store_rejects_malformed_middle_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row(seed=0)) + "\n{oops\n" + json.dumps(_row(seed=1)) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:2: malformed result row"):
        results.ResultsStore(path).rows()


def _load_provenance_copy(directory):
    """benchmark/provenance.py imported from a copy in `directory`, so code_version looks there."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "provenance_copy.py"
    shutil.copy(provenance.__file__, target)
    spec = importlib.util.spec_from_file_location(f"provenance_copy_{directory.name}", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")
def test_code_version_reports_commit_dirty_and_unknown(tmp_path):
    assert _load_provenance_copy(tmp_path / "plain").code_version() == "unknown"
    repo = tmp_path / "repo"
    module = _load_provenance_copy(repo)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True, env=env).stdout.strip()

    git("init", "-q")
    assert module.code_version() == "unknown"  # no commit yet
    git("add", "provenance_copy.py")
    git("commit", "-q", "-m", "init")
    sha = git("rev-parse", "HEAD")
    assert module.code_version() == sha
    (repo / "untracked.txt").write_text("x")
    assert module.code_version() == sha
    with open(repo / "provenance_copy.py", "a") as f:
        f.write("# edit\n")
    assert module.code_version() == sha + "-dirty"


def test_package_versions():
    versions = results.package_versions()
    assert set(versions) == {"tensorflow", "keras", "tensorflow-datasets", "numpy", "pandas",
                             "scikit-learn", "python"}
    assert versions["numpy"] == np.__version__
    assert versions["python"] == platform.python_version()


def test_fingerprint_is_order_type_and_value_sensitive():
    base = results.fingerprint("cxr", np.array([1, 2, 3]), ["a", "b"])
    assert len(base) == 64 and base == results.fingerprint("cxr", np.array([1, 2, 3]), ["a", "b"])
    variants = [
        results.fingerprint(np.array([1, 2, 3]), "cxr", ["a", "b"]),
        results.fingerprint("cxr", np.array([1, 2, 4]), ["a", "b"]),
        results.fingerprint("cxr", np.array([1, 2, 3], dtype=np.int32), ["a", "b"]),
        results.fingerprint("cxr", np.array([[1, 2, 3]]), ["a", "b"]),
        results.fingerprint("cxr", np.array([1, 2, 3]), ["ab", ""]),
        results.fingerprint("cxr", np.array([1, 2, 3]), "ab"),
        results.fingerprint("cxr", np.array([1.0, 2.0, 3.0]), ["a", "b"]),
    ]
    assert len(set(variants + [base])) == len(variants) + 1
    assert results.fingerprint(np.array(["a", "bb"])) == results.fingerprint(["a", "bb"])
    assert results.fingerprint([b"a"]) == results.fingerprint(["a"])
    with pytest.raises(ValueError, match="part 0"):
        results.fingerprint(np.array([{"a": 1}]))


def test_fingerprint_is_stable_across_processes():
    code = ("import numpy as np; from benchmark.harness.results import fingerprint; "
            "print(fingerprint('t', ['p1', 'p2'], np.array([0.5, float('nan')])))")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, text=True,
                              capture_output=True, env={**os.environ, "PYTHONHASHSEED": s}).stdout
               for s in ("1", "2")}
    assert outputs == {results.fingerprint("t", ["p1", "p2"], np.array([0.5, np.nan])) + "\n"}


def test_examples_fingerprint_ignores_example_order_not_labels():
    ids = ["c", "a", "b"]
    labels = np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 0.0]])
    fp = results.examples_fingerprint(ids, labels)
    assert fp == results.examples_fingerprint(ids[::-1], labels[::-1])
    changed = labels.copy()
    changed[0, 0] = 0.0
    assert fp != results.examples_fingerprint(ids, changed)
    with pytest.raises(ValueError, match="3 example_ids"):
        results.examples_fingerprint(ids, labels[:2])


def test_predictions_round_trip_multilabel(tmp_path):
    path = tmp_path / "predictions" / "p.csv"
    ids = ["img,3", 'img"2', "img1", "bild-ä"]
    groups = ["patient 1", "patient,2", "p3", "p3"]
    labels = np.array([[1, np.nan], [0, 1], [np.nan, np.nan], [1, 0]])
    scores = np.random.default_rng(0).random((4, 2)).astype(np.float32)
    results.write_predictions(path, ids, groups, labels, scores, CLASSES)
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header == ("example_id,group_id,label/Atelectasis,label/Pleural Effusion,"
                      "score/Atelectasis,score/Pleural Effusion")
    ex, gr, y, s, names = results.read_predictions(path)
    order = np.argsort(ids)
    assert list(ex) == sorted(ids) and list(gr) == [groups[i] for i in order]
    np.testing.assert_array_equal(y, labels[order])
    np.testing.assert_array_equal(s, scores[order].astype(np.float64))
    assert names == tuple(CLASSES)
    assert os.listdir(path.parent) == ["p.csv"]


def test_predictions_one_hot_from_class_indices(tmp_path):
    path = tmp_path / "p.csv"
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    results.write_predictions(path, ["x", "y"], ["g", "g"], np.array([1, 0]), probs,
                              ["a", "b", "c"])
    _, _, y, s, _ = results.read_predictions(path)
    np.testing.assert_array_equal(y, [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(s, probs)


@pytest.mark.parametrize("args, match", [
    ((["a", "a"], ["g", "g"], np.zeros((2, 2)), np.zeros((2, 2))), "unique"),
    ((["a", "b"], ["g"], np.zeros((2, 2)), np.zeros((2, 2))), "group_ids"),
    ((["a", "b"], ["g", "g"], np.zeros((2, 2)), np.zeros((2, 3))), "scores must be"),
    ((["a", "b"], ["g", "g"], np.zeros((2, 2)), np.array([[0, np.nan], [0, 0]])), "finite"),
    ((["a", "b"], ["g", "g"], np.full((2, 2), 0.5), np.zeros((2, 2))), "0, 1 or nan"),
    ((["a", "b"], ["g", "g"], np.array([0, 2]), np.zeros((2, 2))), "class indices"),
])
def test_write_predictions_rejects_bad_input(tmp_path, args, match):
    with pytest.raises(ValueError, match=match):
        results.write_predictions(tmp_path / "p.csv", *args, CLASSES)
    assert os.listdir(tmp_path) == []


HEADER = "example_id,group_id,label/a,label/b,score/a,score/b\n"


@pytest.mark.parametrize("text, match", [
    ("", ":.*empty file"),
    ("example_id,group_id,label/a,score/b\n", ":1: bad header"),
    ("id,group_id,label/a,score/a\n", ":1: bad header"),
    (HEADER + "x,g,1,0,0.5,0.5\ny,g,1,0.5\n", ":3: expected 6 fields"),
    (HEADER + "x,g,1,2,0.5,0.5\n", ":2: labels must be 0, 1 or blank"),
    (HEADER + "x,g,1,0,0.5,abc\n", ":2: could not convert"),
    (HEADER + "x,g,1,0,0.5,nan\n", ":2: scores must be finite"),
    (HEADER + ",g,1,0,0.5,0.5\n", ":2: empty example_id"),
    (HEADER + "x,g,1,0,0.5,0.5\nx,h,1,0,0.5,0.5\n", ":3: example_id 'x' already on line 2"),
])
def test_read_predictions_errors_name_file_and_row(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.csv" + match):
        results.read_predictions(path)


def test_read_predictions_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        results.read_predictions(tmp_path / "missing.csv")


def test_jsonable_row_round_trips_through_store(tmp_path):
    store = results.ResultsStore(tmp_path / "results.jsonl")
    row = _row()
    row["metrics"]["in_distribution"]["ci95"]["mean_auc"] = (np.float64(0.7), np.float64(0.9))
    store.append(row)
    stored = store.rows()[0]
    assert stored["metrics"]["in_distribution"]["ci95"]["mean_auc"] == [0.7, 0.9]
    assert not math.isnan(stored["metrics"]["in_distribution"]["values"]["mean_auc"])


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_atomic_rewrite_keeps_the_files_permissions(tmp_path, mode):
    store = results.ResultsStore(tmp_path / "results.jsonl")
    store.append(_row(seed=0))
    store.path.chmod(mode)
    store.append(_row(seed=1))
    assert stat.S_IMODE(store.path.stat().st_mode) == mode


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_writer_new_file_gets_the_umask_default(tmp_path, umask):
    old = os.umask(umask)
    try:
        with results.atomic_writer(tmp_path / "new.txt") as f:
            f.write("x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "new.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_atomic_writer_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    path.write_text("old\n")

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        with results.atomic_writer(path) as f:
            f.write("new\n")
    monkeypatch.undo()
    assert results.os_error_text(info.value) == f"{path}: No space left on device"
    assert path.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["results.jsonl"]


@pytest.mark.parametrize("changes, message", [
    ({"method": "bad name!"}, "result row: method 'bad name!' must be 1-63 characters from A-Z "
                              "a-z 0-9 . _ + - starting with a letter or digit"),
    ({"method": "=cmd"}, "result row: method '=cmd' must be 1-63 characters"),
    ({"method": "a" * 64}, "result row: method '" + "a" * 64 + "' must be 1-63 characters"),
    ({"preset": "tpu"}, "result row: preset 'tpu' is not registered; expected one of ['cpu', "
                        "'paper', 'smoke']"),
    ({"deterministic": "yes"}, "result row: 'deterministic' must be a bool, got 'yes'"),
    ({"data_build": {"cxr_chexpert": "abc"}}, "result row: 'data_build' must be a non-empty "
                                              "object of build -> sha256 hex digest, got"),
])
def test_validate_row_applies_the_run_and_submit_rules(changes, message):
    """One rule for method names and presets (`results.method_name_problem`, `preset_problem`),
    shared with `benchmark.run` and `benchmark.submit`."""
    with pytest.raises(ValueError) as info:
        results.validate_row(_row(**changes))
    assert str(info.value).startswith(message), str(info.value)


def test_validate_row_accepts_either_determinism():
    results.validate_row(_row(deterministic=True))
    results.validate_row(_row(deterministic=False))
