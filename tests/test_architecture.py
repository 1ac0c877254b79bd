"""The layers of `.importlinter`, checked by `lint-imports` on this checkout, and the check itself
failing on a copy with a deliberate violation."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("baselines", "benchmark", "medssl_common", "tfds_builders")
LINT = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT, "--config", str(root / ".importlinter"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns(
            "__pycache__", "dummy_data", "*.md", "*.bib"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def lint_ready():
    if LINT is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")


def test_the_layers_hold(lint_ready):
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("baselines/checkpoint.py", "from benchmark.harness import results", "does not import benchmark"),
    ("tfds_builders/_common.py", "import baselines.api", "imports neither baselines nor benchmark"),
    ("benchmark/harness/scoring.py", "from benchmark.board import lines", "above harness"),
    ("baselines/api.py", "from baselines import micle", "no import cycles"),
])
def test_a_deliberate_violation_breaks_its_contract(tmp_path, lint_ready, module, line, contract):
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    proc = _lint(root)
    assert proc.returncode != 0, proc.stdout
    broken = proc.stdout[proc.stdout.index("Broken contracts"):]
    assert contract in " ".join(broken.split()), proc.stdout
