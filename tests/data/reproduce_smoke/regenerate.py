"""Regenerates the committed smoke-sized row that `tests/test_reproduce.py` reproduces byte for byte.

    python tests/data/reproduce_smoke/regenerate.py

Run it from a clean checkout after any change to `baselines/`, `benchmark/` or `tfds_builders/`
(the row's code_digest must be the checkout's), and commit the files it writes here.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
ARGS = ["--control=none", "--method=simclr", "--task=derm", "--preset=smoke", "--eval_modes=finetune",
        "--label_fractions=100", "--seeds=0", "--noprogress"]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        subprocess.run([sys.executable, "-m", "benchmark.run", *ARGS, f"--data_dir={tmp}/data",
                        f"--output_dir={out}"], cwd=ROOT, check=True)
        for name in ("results.jsonl", "predictions"):
            target = os.path.join(HERE, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        shutil.copy(os.path.join(out, "results.jsonl"), HERE)
        shutil.copytree(os.path.join(out, "predictions"), os.path.join(HERE, "predictions"))
    print(f"wrote {HERE}/results.jsonl and predictions/")


if __name__ == "__main__":
    main()
