"""benchmark.parity: replicates of one configuration in float32 and bfloat16, compared per cell."""
import json
import re

import numpy as np
import pytest

from benchmark.board import parity
from shared_helpers import example_builder


def _replicate(directory, precision, pretrain_seed, skill, **config):
    """A cxr row of one replicate, scored from the toy prediction files it writes."""
    method = f"micle-{precision}-p{pretrain_seed}"
    row = example_builder().make_cell("cxr", method, 0.1, pretrain_seed, directory, skill=skill)
    row["config"] = {"method": method, "method_spec": "micle", "backbone": {"depth": 18},
                     "precision": {"used": precision, "requested": precision},
                     "pretrain": {"seed": pretrain_seed, "precision": precision, "steps": 9},
                     **config}
    return row


def _rows(directory):
    return ([_replicate(directory, "float32", s, 1.0) for s in range(3)]
            + [_replicate(directory, "bfloat16", s, 1.4) for s in range(3)])


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_parity_table_compares_means_against_the_larger_spread(tmp_path):
    rows = _rows(tmp_path)
    lines = parity.parity_lines(parity.read_rows(_write(tmp_path / "r.jsonl", rows)))
    assert [l.test_set for l in lines] == ["in_distribution", "shifted"]
    for line in lines:
        f32, bf16 = ([r["metrics"][line.test_set]["values"]["mean_auc"] for r in rows
                      if r["config"]["precision"]["used"] == p] for p in ("float32", "bfloat16"))
        assert line.values == (tuple(f32), tuple(bf16))
        assert line.difference == pytest.approx(np.mean(bf16) - np.mean(f32))
        assert line.spread == pytest.approx(max(np.std(f32, ddof=1), np.std(bf16, ddof=1)))
        assert line.within == (abs(line.difference) <= line.spread)
        assert (f"| cxr | finetune | 10% | {line.test_set} | mean_auc | {np.mean(f32):.3f} ± "
                f"{np.std(f32, ddof=1):.3f} (n=3) |") in parity.table(lines)


def _edit_prediction(rows, directory, index, test_set="in_distribution"):
    """Swaps the scores of the first two examples of a row's prediction file."""
    path = directory / rows[index]["metrics"][test_set]["predictions"]
    lines = path.read_text().splitlines()
    header, a, b = lines[0].split(","), lines[1].split(","), lines[2].split(",")
    k = (len(header) - 2) // 2
    a[2 + k:], b[2 + k:] = b[2 + k:], a[2 + k:]
    lines[1], lines[2] = ",".join(a), ",".join(b)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("change,message", [
    (lambda rows, d: rows[4]["config"].update(backbone={"depth": 50}),
     r"r.jsonl:5: row of micle-bfloat16-p1 has another configuration than .*r.jsonl:1"),
    (lambda rows, d: rows[3]["config"].update(method_spec="simclr"),
     r"r.jsonl:4: row of micle-bfloat16-p0 has another configuration"),
    (lambda rows, d: rows.__setitem__(5, _replicate(d, "bfloat16", 1, 1.4)),
     r"r.jsonl:6: replicate \(pretraining seed, seed\) = \(1, 1\) appears twice in bfloat16"),
    (lambda rows, d: rows.pop(0) and rows.pop(0),
     r"cell \('cxr', 'cpu', 'finetune', 0.1\): \{'float32': 1, 'bfloat16': 3\} replicates; expected at "
     r"least 2"),
    (lambda rows, d: rows[0]["config"]["precision"].update(used="float16"),
     r"r.jsonl:1: config.precision.used 'float16'"),
    (lambda rows, d: rows[4].update(code_digest="c" * 64),
     r"^\S*r.jsonl:5: row of micle-bfloat16-p1 has another code_digest than \S*r.jsonl:1 "
     r"\(cccccccccccc... vs \w{12}...\); parity pools only replicates of one code, machine kind "
     r"and data$"),
    (lambda rows, d: rows[2]["machine"].update(isa=["amx_bf16"]),
     r"r.jsonl:3: row of micle-float32-p2 has another machine kind than .*parity pools only "
     r"replicates of one code, machine kind and data$"),
    (lambda rows, d: rows[1]["data_build"].update({"cxr_toy/64px/1.0.0": "d" * 64}),
     r"r.jsonl:2: row of micle-float32-p1 has another data_build\[cxr_toy/64px/1.0.0\] than "
     r"\S*r.jsonl:1 \(dddddddddddd... vs \w{12}...\)"),
    (lambda rows, d: rows[1]["metrics"]["shifted"].update(fingerprint="e" * 64),
     r"r.jsonl:2: row of micle-float32-p1 has another metrics.shifted.fingerprint than "),
    (lambda rows, d: rows[4].update(data_fingerprint="f" * 64),
     r"r.jsonl:5: row of micle-bfloat16-p1 trained on another subset \(data_fingerprint "
     r"ffffffffffff...\) than \S*r.jsonl:2 \(\w{12}...\) of the same label fraction and seed"),
    (lambda rows, d: _edit_prediction(rows, d, 3),
     r"^\S*r.jsonl:4: metrics.in_distribution: values\.\S+ = 0.\d+ but re-scoring "
     r"predictions/cxr_micle-bfloat16-p0_cpu_finetune_f10_s0_in_distribution.csv gives 0.\d+ "
     r"\(tolerance 1e-06\); parity compares only rows whose numbers are their predictions'$"),
    (lambda rows, d: (d / rows[2]["metrics"]["shifted"]["predictions"]).unlink(),
     r"^\S*r.jsonl:3: prediction file predictions/\S+_shifted.csv of metrics.shifted is not in "
     r"\S+; parity re-scores every replicate from its predictions$"),
])
def test_parity_refuses_rows_that_are_not_replicates_of_one_configuration(tmp_path, change, message):
    rows = _rows(tmp_path)
    change(rows, tmp_path)
    with pytest.raises(ValueError, match=message):
        parity.parity_lines(parity.read_rows(_write(tmp_path / "r.jsonl", rows)))


def test_an_undefined_primary_metric_is_one_line_naming_the_row(tmp_path):
    """A replicate whose primary metric is undefined once re-scored (here: no positive label of
    any class in one test set, so no AUC) is an error naming it, not a traceback."""
    rows = _rows(tmp_path)
    path = tmp_path / rows[1]["metrics"]["shifted"]["predictions"]
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    k = (len(header) - 2) // 2
    for i in range(1, len(lines)):
        cells = lines[i].split(",")
        cells[2:2 + k] = ["" if c == "" else "0" for c in cells[2:2 + k]]
        lines[i] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    from benchmark.board import rules
    from benchmark.harness import results, tasks

    rescored = rules.rescore(tasks.get_task("cxr"), "shifted", rows[1],
                             results.read_predictions(path))
    rows[1]["metrics"]["shifted"].update(values=rescored["values"], ci95=rescored["ci95"])
    path_rows = _write(tmp_path / "r.jsonl", rows)
    with pytest.raises(ValueError, match=r"^\S*r.jsonl:2: metrics.shifted.values.mean_auc is "
                                         r"undefined \(null or NaN\) when re-scored from its "
                                         r"predictions; parity needs a value for every replicate$"):
        parity.parity_lines(parity.read_rows(path_rows))


@pytest.mark.parametrize("paths,message", [
    (["/nope"], "--results=/nope: no such file; expected a results.jsonl"),
    (["/"], "--results=/: not a regular file; expected a results.jsonl"),
    ([], "--results: expected one or more results.jsonl files"),
])
def test_parity_flags_fail_in_one_line(paths, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parity.report(paths)


def test_a_truncated_last_line_is_reported_and_skipped(tmp_path):
    path = _write(tmp_path / "r.jsonl", _rows(tmp_path))
    with open(path, "a") as f:
        f.write('{"task": "cx')
    from benchmark.harness import results

    with pytest.warns(results.TruncatedLineWarning, match=r"r.jsonl:7: ignoring truncated last line"):
        located = parity.read_rows(path)
    assert [where.rsplit(":", 1)[1] for where, _ in located] == ["1", "2", "3", "4", "5", "6"]
