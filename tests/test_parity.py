"""benchmark.parity: replicates of one configuration in float32 and bfloat16, compared per cell."""
import json
import re

import numpy as np
import pytest

from benchmark.board import parity
from test_results import _row


def _replicate(precision, pretrain_seed, value, shifted=0.5, **config):
    row = _row(method=f"micle-{precision}-p{pretrain_seed}", seed=pretrain_seed)
    row["config"] = {"method": row["method"], "method_spec": "micle", "backbone": {"depth": 18}, "precision": {"used": precision, "requested": precision},
                     "pretrain": {"seed": pretrain_seed, "precision": precision, "steps": 9}, **config}
    row["metrics"]["in_distribution"]["values"]["mean_auc"] = value
    row["metrics"]["shifted"]["values"]["mean_auc"] = shifted
    return row


F32, BF16 = (0.60, 0.62, 0.58), (0.70, 0.64, 0.61)
F32_SHIFTED, BF16_SHIFTED = (0.50, 0.55, 0.45), (0.52, 0.50, 0.57)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_parity_table_compares_means_against_the_larger_spread(tmp_path):
    rows = [_replicate("float32", s, v, w) for s, (v, w) in enumerate(zip(F32, F32_SHIFTED))]
    rows += [_replicate("bfloat16", s, v, w) for s, (v, w) in enumerate(zip(BF16, BF16_SHIFTED))]
    lines = parity.parity_lines(parity.read_rows(_write(tmp_path / "r.jsonl", rows)))
    assert [(l.test_set, l.values) for l in lines] == [
        ("in_distribution", (F32, BF16)), ("shifted", (F32_SHIFTED, BF16_SHIFTED))]
    inside, shifted = lines
    assert inside.difference == pytest.approx(np.mean(BF16) - np.mean(F32))
    assert inside.spread == pytest.approx(max(np.std(F32, ddof=1), np.std(BF16, ddof=1)))
    assert inside.within is False  # +0.05 against a spread of 0.046
    assert shifted.within is True  # +0.030 against a spread of 0.050
    table = parity.table(lines)
    assert "| cxr | finetune | 10% | in_distribution | mean_auc | 0.600 ± 0.020 (n=3) | 0.650 ± 0.046 (n=3) | +0.050 | 0.046 | NO |" in table


@pytest.mark.parametrize("change,message", [
    (lambda rows: rows[4]["config"].update(backbone={"depth": 50}),
     r"r.jsonl:5: row of micle-bfloat16-p1 has another configuration than .*r.jsonl:1"),
    (lambda rows: rows[3]["config"].update(method_spec="simclr"),
     r"r.jsonl:4: row of micle-bfloat16-p0 has another configuration"),
    (lambda rows: rows[5].update(seed=1) or rows[5]["config"]["pretrain"].update(seed=1),
     r"r.jsonl:6: replicate \(pretraining seed, seed\) = \(1, 1\) appears twice in bfloat16"),
    (lambda rows: rows.pop(0) and rows.pop(0),
     r"cell \('cxr', 'cpu', 'finetune', 0.1\): \{'float32': 1, 'bfloat16': 3\} replicates; expected at "
     r"least 2"),
    (lambda rows: rows[0]["config"]["precision"].update(used="float16"),
     r"r.jsonl:1: config.precision.used 'float16'"),
])
def test_parity_refuses_rows_that_are_not_replicates_of_one_configuration(tmp_path, change, message):
    rows = [_replicate("float32", s, v) for s, v in enumerate(F32)]
    rows += [_replicate("bfloat16", s, v) for s, v in enumerate(BF16)]
    change(rows)
    with pytest.raises(ValueError, match=message):
        parity.parity_lines(parity.read_rows(_write(tmp_path / "r.jsonl", rows)))


@pytest.mark.parametrize("paths,message", [
    (["/nope"], "--results=/nope: no such file; expected a results.jsonl"),
    (["/"], "--results=/: not a regular file; expected a results.jsonl"),
    ([], "--results: expected one or more results.jsonl files"),
])
def test_parity_flags_fail_in_one_line(paths, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parity.report(paths)


def test_a_truncated_last_line_is_reported_and_skipped(tmp_path):
    rows = [_replicate("float32", s, v) for s, v in enumerate(F32)]
    rows += [_replicate("bfloat16", s, v) for s, v in enumerate(BF16)]
    path = _write(tmp_path / "r.jsonl", rows)
    with open(path, "a") as f:
        f.write('{"task": "cx')
    from benchmark.harness import results

    with pytest.warns(results.TruncatedLineWarning, match=r"r.jsonl:7: ignoring truncated last line"):
        located = parity.read_rows(path)
    assert [where.rsplit(":", 1)[1] for where, _ in located] == ["1", "2", "3", "4", "5", "6"]
