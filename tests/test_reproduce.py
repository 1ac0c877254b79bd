"""`benchmark.reproduce`: selecting a row, refusing what cannot be reproduced, and reproducing the
committed smoke-sized row byte for byte."""
import copy
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from benchmark.board import reproduce
from benchmark.harness import presets
from medssl_common import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "reproduce_smoke")
RESULTS = os.path.join(FIXTURE, "results.jsonl")


def _committed_row() -> dict:
    """The committed smoke row, with this code's smoke fine-tuning settings (the row may predate
    them; `test_committed_row_is_from_this_code` says when it must be regenerated)."""
    with open(RESULTS, encoding="utf-8") as f:
        row = json.loads(f.readline())
    row["config"]["finetune"] = json.loads(json.dumps(dataclasses.asdict(presets.get_preset("smoke").finetune)))
    return row


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("reproduce_data"))


def test_committed_row_is_from_this_code():
    row = _committed_row()
    assert row["code_digest"] == provenance.code_digest(), (
        "tests/data/reproduce_smoke was computed by other code: regenerate it with "
        "`python tests/data/reproduce_smoke/regenerate.py` and commit it")


def test_reproduces_committed_smoke_row_byte_for_byte(tmp_path, data_dir):
    row = _committed_row()
    if provenance.machine_kind(row["machine"]) != provenance.machine_kind(provenance.machine()):
        pytest.skip(f"the committed row was computed on another kind of machine ({row['machine']})")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.reproduce", f"--results={RESULTS}", "--row=1",
         f"--data_dir={data_dir}", f"--scratch_dir={tmp_path / 'scratch'}", "--noprogress"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "reproduced"
    verdicts = {line.split()[0]: line.split()[1] for line in lines if line.split()[:1] in (
        [name] for name in row["metrics"])}
    assert verdicts == {name: "identical" for name in row["metrics"]}
    assert "row: identical apart from created, wall_seconds" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_refuses_other_code_before_any_work(tmp_path):
    row = copy.deepcopy(_committed_row())
    row["code_digest"] = "0" * 64
    path = _write(tmp_path / "results.jsonl", [row])
    proc = subprocess.run([sys.executable, "-m", "benchmark.reproduce", f"--results={path}",
                           "--row=1", f"--data_dir={tmp_path / 'data'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {path}:1: computed by other code")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # refused before preparing any data


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(data_fingerprint="1" * 64), "its training examples"),
    (lambda r: r["metrics"]["shifted"].update(fingerprint="2" * 64), "its shifted test set"),
    (lambda r: r["data_build"].update({k: "3" * 64 for k in r["data_build"]}), "computed on another build of"),
])
def test_refuses_other_data(tmp_path, data_dir, change, message):
    row = copy.deepcopy(_committed_row())
    change(row)
    where = f"{tmp_path}/results.jsonl:1"
    cfg = reproduce.rerun_config(where, row, data_dir=data_dir, scratch_dir=str(tmp_path / "s"),
                                 progress=False)
    with pytest.raises(ValueError, match=f"^{where}: " + message):
        reproduce.check_data(where, row, cfg)


def _cell(**changes):
    cell = dict(task="derm", method="simclr", eval_mode="finetune", label_fraction=100.0, seed=0)
    cell.update(changes)
    return cell


@pytest.mark.parametrize("setup, kwargs, message", [
    ("missing", dict(line=1), r"--results=\S+: no such file"),
    ("one", dict(line=7), r"--row=7: \S+ has no row on line 7"),
    ("one", dict(line=1, task="derm"), "give either --row or the cell"),
    ("one", dict(task="derm"), "give --row or the whole cell: missing --method, --eval_mode"),
    ("one", _cell(seed=5), "no row for the cell task=derm method=simclr eval_mode=finetune "
                           "label_fraction=100 seed=5"),
    ("two_presets", _cell(), r"2 rows for the cell .* \(lines \[1, 2\]\); add --preset or use --row"),
    ("torn", dict(line=2), r":1: malformed result row"),
    ("list", dict(line=1), r":1: expected a JSON object per line"),
])
def test_select_row_errors(tmp_path, setup, kwargs, message):
    row = _committed_row()
    path = tmp_path / "results.jsonl"
    if setup == "one":
        _write(path, [row])
    elif setup == "two_presets":
        _write(path, [row, {**row, "preset": "cpu"}])
    elif setup == "torn":
        path.write_text(json.dumps(row)[:40] + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    elif setup == "list":
        path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        reproduce.select_row(str(path), **kwargs)


def test_select_row_by_cell_and_preset(tmp_path):
    row = _committed_row()
    path = _write(tmp_path / "results.jsonl", [row, {**row, "preset": "cpu"}])
    assert reproduce.select_row(path, preset="cpu", **_cell())[0] == 2
    assert reproduce.select_row(path, line=1)[1] == row


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(schema=1), "cannot be re-run: result row: schema 1"),
    (lambda r: r["config"].pop("requested_backbone"), "cannot be re-run: its config lacks requested_backbone"),
    (lambda r: r.update(preset="huge"), "cannot be re-run: result row: preset 'huge' is not registered"),
    (lambda r: r["config"]["pretrain"].update(warp_speed=9), "cannot be re-run with this code: .*warp_speed"),
])
def test_rerun_config_refuses_rows_that_lack_what_a_rerun_needs(tmp_path, change, message):
    row = copy.deepcopy(_committed_row())
    change(row)
    with pytest.raises(ValueError, match="^r.jsonl:1: " + message):
        reproduce.rerun_config("r.jsonl:1", row, data_dir=str(tmp_path), scratch_dir=str(tmp_path))


def test_rerun_config_recreates_the_cell():
    row = _committed_row()
    cfg = reproduce.rerun_config("r:1", row, data_dir="d", scratch_dir="s")
    assert cfg.method == row["config"]["method_spec"] and cfg.method_name == row["method"]
    assert cfg.preset.label_fractions == (100.0,) and cfg.preset.seeds == (0,)
    assert cfg.preset.eval_modes == ("finetune",)
    assert cfg.deterministic is True and cfg.output_dir == "s"


def test_a_row_never_chooses_code_to_run(tmp_path, monkeypatch):
    """Issue 21, principle 7: a row whose `config.method_spec` is not a registered method (an
    import path) is re-run only when the user names that spec, equal to the row's; the module is
    never imported on the row's word."""
    marker = tmp_path / "imported"
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "evil_reproduce_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    row = copy.deepcopy(_committed_row())
    spec = "evil_reproduce_module:Method"
    row["config"]["method_spec"] = spec
    with pytest.raises(ValueError, match=(
            r"^r.jsonl:1: its config.method_spec 'evil_reproduce_module:Method' is not a "
            r"registered method \(micle, none, random_init, simclr, supervised\); a row is data "
            r"and never chooses code to run: if you trust that code, name it yourself with "
            r"--method_spec=evil_reproduce_module:Method$")):
        reproduce.rerun_config("r.jsonl:1", row, data_dir="d", scratch_dir="s")
    with pytest.raises(ValueError, match=(r"^--method_spec=simclr: the row's config.method_spec "
                                          r"is 'evil_reproduce_module:Method'; expected them "
                                          r"equal$")):
        reproduce.rerun_config("r.jsonl:1", row, data_dir="d", scratch_dir="s",
                               method_spec="simclr")
    assert not marker.exists() and "evil_reproduce_module" not in sys.modules
    cfg = reproduce.rerun_config("r.jsonl:1", row, data_dir="d", scratch_dir="s",
                                 method_spec=spec)
    assert cfg.method == spec  # named by the user: what `runner.run` will import
