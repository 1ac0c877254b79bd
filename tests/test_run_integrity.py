"""A run's integrity: flags checked before any work, one lock per output dir, predictions committed
with their row, stored cells only reused for the same configuration, resumable pretraining that
survives missing or corrupt checkpoint files, and environment errors as one line."""
import dataclasses
import errno
import glob
import json
import os
import shutil
import subprocess
import sys

import keras
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from baselines import checkpoint
from baselines.api import BackboneConfig, PretrainConfig
from baselines.registry import get_method
from baselines.backbones import build_encoder
from baselines.simclr import SimCLR
from benchmark import cli, run
from benchmark.harness import results, runner
from shared_helpers import parsed_flags
from test_methods import Recorder, Stop, groups, options
from test_results import _row
from test_run import _config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fail(*args, **kwargs):
    raise AssertionError("reached work that must come after flag validation")


def _main(argv, monkeypatch, *, work_allowed=False):
    """Runs `benchmark.run` main in-process on `argv`; returns its exit message (None on success)."""
    if not work_allowed:
        for target in ("run", "_run_locked"):
            monkeypatch.setattr(runner, target, _fail)
        monkeypatch.setattr(run.data, "prepare", _fail)
        monkeypatch.setattr(run.distribute, "get_strategy", _fail)
    with parsed_flags(["run", *argv]) as positional, pytest.raises(SystemExit) as exit_info:
        run.main(positional)
    return exit_info.value.code


@pytest.fixture
def paths(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"file": str(a_file), "missing": str(tmp_path / "missing"), "tmp": str(tmp_path)}


BAD_FLAGS = [
    ("--method=none", "--method=none evaluates the --init_checkpoint encoder as it is: give "
                      "--init_checkpoint, or use --method=random_init for the untrained control"),
    ("--seeds=-1", "--seeds=-1: seeds must be >= 0"),
    ("--seeds=0,-2", "--seeds=0,-2: seeds must be >= 0"),
    ("--seeds=", "--seeds=: empty; give comma-separated values or leave the flag out for the preset's"),
    ("--seeds=0,0", "--seeds=0,0: duplicate values"),
    ("--seeds=one", "--seeds=one: expected comma-separated integers >= 0"),
    ("--seeds=0,,1", "--seeds=0,,1: expected comma-separated integers >= 0"),
    ("--label_fractions=", "--label_fractions=: empty; give comma-separated values"),
    ("--label_fractions=0", "--label_fractions=0: '0' is outside (0, 100]"),
    ("--label_fractions=10,10", "--label_fractions=10,10: '10' is repeated"),
    ("--label_fractions=ten", "--label_fractions=ten: 'ten' is not a number"),
    ("--eval_modes=", "--eval_modes=: empty; give comma-separated values"),
    ("--eval_modes=finetune,finetune", "--eval_modes=finetune,finetune: duplicate values"),
    ("--eval_modes=probe", "--eval_modes=probe: unknown mode 'probe'; expected one of ('finetune', "
                           "'linear', 'distill') or distill:<backbone>"),
    ("--eval_modes=finetune,distill:resnet_v1-12", "--eval_modes=finetune,distill:resnet_v1-12: eval mode "
                                                   "distill:resnet_v1-12: resnet_v1 depth=12: expected one of"),
    ("--student_init={missing}", "--student_init={missing}: no such file or directory"),
    ("--student_init={tmp}", "--student_init={tmp}: only students of another backbone (eval modes "
                             "distill:<backbone>) start from an encoder of their own; the eval modes "
                             "are finetune,linear"),
    ("--eval_modes=distill:bit-50x1,distill:bit-50", "--eval_modes=distill:bit-50x1,distill:bit-50: "
                                                     "duplicate values"),
    ("--backbone=resnet_v1-7", "--backbone=resnet_v1-7: resnet_v1 depth=7: expected one of "
                               "[10, 18, 34, 50, 101, 152]"),
    ("--backbone=resnet_v1-18x0", "--backbone=resnet_v1-18x0: resnet_v1 width=0.0: expected one of"),
    ("--backbone=resnet_v1-18x5", "--backbone=resnet_v1-18x5: resnet_v1 width=5.0: expected one of"),
    ("--backbone=resnet_v1-18x-1", "--backbone=resnet_v1-18x-1: expected resnet_v1-<depth>"),
    ("--backbone=bit-7", "--backbone=bit-7: bit_resnet_v2 depth=7: expected one of"),
    ("--backbone=bit-50x0.3", "--backbone=bit-50x0.3: bit_resnet_v2 width=0.3"),
    ("--backbone=vgg-16", "--backbone=vgg-16: expected resnet_v1-<depth>[x<width>][-small]"),
    ("--backbone=", "--backbone=: expected resnet_v1-<depth>"),
    ("--init_checkpoint={missing}", "--init_checkpoint={missing}: no such file or directory"),
    ("--output_dir={file}", "--output_dir={file}: exists and is not a directory"),
    ("--output_dir={file}/sub", "--output_dir={file}/sub: {file} is a file, not a directory"),
    ("--data_dir={file}", "--data_dir={file}: exists and is not a directory"),
    ("--manual_dir={missing}", "--manual_dir={missing}: no such directory"),
    ("--manual_dir={file}", "--manual_dir={file}: exists and is not a directory"),
    ("--uncertainty=u_maybe", "--uncertainty=u_maybe: expected one of ('u_ones', 'u_zeros', 'u_ignore')"),
    ("--strategy=gpu", "--strategy='gpu': unknown strategy; expected one of"),
    ("--strategy=tpu", "--strategy=tpu needs a TPU address"),
    ("--tpu_address=grpc://x:8470", "--strategy=default: a TPU address only applies to --strategy=tpu"),
    ("--strategy=multi_worker", "--strategy=multi_worker needs the TF_CONFIG environment variable"),
    ("--preset=huge", "--preset=huge: unknown preset; expected one of"),
    ("--task=mri", "--task=mri: unknown task; expected one of ['cxr', 'derm'] or folder:<dir>"),
    ("--method=nope", "--method=nope: unknown method"),
    ("--method=no.such:Class", "--method=no.such:Class: cannot import 'Class' from 'no.such'"),
    ("--method=baselines.examples.minimal_method:RotationPrediction",
     "--name=baselines.examples.minimal_method:RotationPrediction: a method name is 1-63 characters"),
    ("--name=my method", "--name=my method: a method name is 1-63 characters"),
    ("--pretrain_steps=0", "--pretrain_steps=0: expected a positive integer"),
    ("--pretrain_seed=-1", "--pretrain_seed=-1: expected an integer >= 0"),
    ("--control=scratch", "--control=scratch: expected one of ('random_init',) or none"),
    ("--precision=float16", "--precision=float16: expected one of float32, bfloat16, auto"),
    ("stray", "unexpected arguments ['stray']; every setting is a --flag"),
    ("--test_sets=", "--test_sets=: empty value; give comma-separated test sets from "
                     "('in_distribution', 'shifted'), or leave the flag out for all of them"),
    ("--test_sets=ood", "--test_sets=ood: unknown test set 'ood' for --task=cxr; expected some of "
                        "('in_distribution', 'shifted')"),
    ("--test_sets=shifted,shifted", "--test_sets=shifted,shifted: duplicate values"),
]


@pytest.mark.parametrize("arg,message", BAD_FLAGS, ids=[a for a, _ in BAD_FLAGS])
def test_bad_run_flags_fail_in_one_line_before_any_work(arg, message, paths, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = [arg.format(**paths), f"--output_dir={paths['tmp']}/out", f"--data_dir={paths['tmp']}/data"]
    if arg.startswith("--output_dir") or arg.startswith("--data_dir"):
        argv = [argv[0]]
    code = _main(argv, monkeypatch)
    assert code.startswith("error: " + message.format(**paths)), code
    assert "\n" not in code


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only directories")
def test_read_only_output_dir_is_a_flag_error(tmp_path, monkeypatch):
    tmp_path.joinpath("ro").mkdir(mode=0o500)
    code = _main([f"--output_dir={tmp_path / 'ro'}"], monkeypatch)
    assert code == f"error: --output_dir={tmp_path / 'ro'}: directory is not writable"


def test_unwritable_output_dir_is_a_flag_error(tmp_path, monkeypatch):
    """(Also as root, by os.access.)"""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(run.os, "access", lambda path, mode: os.path.abspath(path) != str(out))
    assert _main([f"--output_dir={out}"], monkeypatch) == (
        f"error: --output_dir={out}: directory is not writable")
    assert _main([f"--output_dir={out}/new"], monkeypatch) == (
        f"error: --output_dir={out}/new: cannot be created ({out} is not writable)")


@pytest.mark.parametrize("error,line", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/o/results.jsonl"),
     "error: /o/results.jsonl: No space left on device"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/o/.run.lock"),
     "error: /o/.run.lock: Permission denied"),
    (tf.errors.ResourceExhaustedError(None, None, "/o/pretrain/cxr_micle/state/ckpt-2.data-00000-of-00001; "
                                                  "No space left on device\n\tmore detail"),
     "error: /o/pretrain/cxr_micle/state/ckpt-2.data-00000-of-00001; No space left on device"),
    (ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources"),
     "error: this environment lacks the Python package 'importlib_resources', which the run needs; "
     "install the suite's requirements (pip install -e .)"),
], ids=["enospc_results", "eacces_lock", "enospc_checkpoint", "missing_package"])
def test_os_and_tensorflow_errors_during_a_run_are_one_line(error, line, tmp_path, monkeypatch):
    def raising(cfg, strategy):
        raise error

    monkeypatch.setattr(runner, "run", raising)
    monkeypatch.setattr(run.distribute, "get_strategy", lambda *a, **k: tf.distribute.get_strategy())
    argv = [f"--output_dir={tmp_path}/out", f"--data_dir={tmp_path}/data", "--preset=smoke"]
    assert _main(argv, monkeypatch, work_allowed=True) == line


def test_second_run_on_one_output_dir_is_refused_naming_the_holder(tmp_path, monkeypatch):
    cfg = _config(tmp_path, "cxr", "simclr")
    os.makedirs(cfg.output_dir)
    monkeypatch.setattr(runner.data, "prepare", _fail)
    with runner.hold_output_dir(cfg.output_dir):
        with pytest.raises(ValueError, match=rf"output dir {cfg.output_dir} is in use by another run "
                                             rf"\(pid {os.getpid()} on .*, started .*Z: "):
            runner.run(cfg)
        code = _main([f"--output_dir={cfg.output_dir}", f"--data_dir={tmp_path}/data", "--preset=smoke"],
                     monkeypatch, work_allowed=True)
        assert code.startswith(f"error: output dir {cfg.output_dir} is in use by another run (pid ")
    with runner.hold_output_dir(cfg.output_dir):  # released when the holder ends
        pass


def test_duplicate_grid_values_are_refused_by_the_runner(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.data, "prepare", _fail)
    cfg = _config(tmp_path, "cxr", "simclr", eval_modes=("finetune", "finetune"))
    with pytest.raises(ValueError, match=r"eval_modes=\('finetune', 'finetune'\): duplicate values"):
        runner.run(cfg)


def _pending(tmp_path, name, text):
    final = tmp_path / "predictions" / name
    pending = final.with_name(f".{name}.1.pending")
    pending.parent.mkdir(exist_ok=True)
    pending.write_text(text)
    return str(pending), str(final)


def test_predictions_are_committed_with_their_row_and_never_replace_a_stored_cells(tmp_path, monkeypatch):
    store = results.ResultsStore(tmp_path / "results.jsonl")
    pending, final = _pending(tmp_path, "a.csv", "first")
    store.append(_row(), files={pending: final})
    assert open(final).read() == "first" and not os.path.exists(pending)
    # The same cell again: its temporaries are dropped, the stored file stays the one scored.
    pending, _ = _pending(tmp_path, "a.csv", "second")
    with pytest.raises(ValueError, match="is already stored"):
        store.append(_row(), files={pending: final})
    assert open(final).read() == "first" and not os.path.exists(pending)
    # An invalid row: nothing renamed, temporaries dropped.
    pending, other = _pending(tmp_path, "b.csv", "third")
    with pytest.raises(ValueError, match="seed"):
        store.append(_row(seed=1.5), files={pending: other})
    assert not os.path.exists(pending) and not os.path.exists(other)
    # A full disk while the row is written: stored rows intact, no row points to the new file.
    before = store.path.read_bytes()

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(results, "atomic_writer", full)
    pending, other = _pending(tmp_path, "c.csv", "fourth")
    with pytest.raises(OSError, match="No space left"):
        store.append(_row(seed=2), files={pending: other})
    assert store.path.read_bytes() == before and [r["seed"] for r in store.rows()] == [0]


def _store_grid(cfg, method_spec):
    """Rows for every cell of `cfg`'s grid, as a run of `method_spec` (named cfg.method_name) stores them."""
    stored_cfg = dataclasses.replace(cfg, method=method_spec)
    store = results.ResultsStore(os.path.join(cfg.output_dir, "results.jsonl"))
    config = runner._config_record(stored_cfg, get_method(method_spec))
    for fraction in cfg.preset.label_fractions:
        store.append(_row(task=cfg.task.name, method=cfg.method_name, preset=cfg.preset.name,
                          label_fraction=fraction / 100.0, config=config))
    return store


def test_stored_cell_of_another_method_or_config_is_an_error_not_a_hit(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.data, "prepare", _fail)
    cfg = dataclasses.replace(_config(tmp_path, "cxr", "simclr"), name="simclr")
    _store_grid(cfg, "micle")  # --method=micle --name=simclr
    with pytest.raises(ValueError, match=r"results.jsonl:1: cell \('cxr', 'simclr', 'smoke', 'finetune', 0.5, 0\) "
                                         r"is stored from another configuration \(method_spec: stored "
                                         r"'micle' != this run 'simclr'\)"):
        runner.run(cfg)
    code = _main(["--method=simclr", "--task=cxr", "--preset=smoke", f"--output_dir={cfg.output_dir}",
                  f"--data_dir={tmp_path}/data"], monkeypatch, work_allowed=True)
    assert code.startswith(f"error: {cfg.output_dir}/results.jsonl:1: cell (") and "method_spec" in code
    # Same method, other settings: named by their dotted keys.
    stage = str(tmp_path / "stage")
    checkpoint.save_stage(stage, encoder=build_encoder(cfg.preset.backbone), method="simclr",
                          backbone=cfg.preset.backbone, config=None, steps_done=0)
    shutil.rmtree(cfg.output_dir)
    _store_grid(cfg, "simclr")
    assert len(runner.run(cfg)) == 2  # same configuration: a hit, nothing computed
    steps = dataclasses.replace(cfg, preset=dataclasses.replace(
        cfg.preset, pretrain=dataclasses.replace(cfg.preset.pretrain, steps=7)))
    with pytest.raises(ValueError, match=r"\(pretrain.steps: stored 4 != this run 7\)"):
        runner.run(steps)
    with pytest.raises(ValueError, match=r"\(init.fingerprint: stored .*; init.kind: stored 'scratch' != "
                                         r"this run 'stage'; init.name: stored .*\)"):
        runner.run(dataclasses.replace(cfg, init_checkpoint=stage))


B = BackboneConfig(family="resnet_v1", depth=10, width=0.25, small_stem=True)
C = PretrainConfig(image_size=32, batch_size=2, steps=6, checkpoint_every=2)
DEFAULT = tf.distribute.get_strategy()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A SimCLR stage killed after step 5 of 6: state/ckpt-2 and ckpt-4, meta.json steps_done=4."""
    directory = str(tmp_path_factory.mktemp("interrupted") / "stage")
    with pytest.raises(Stop):
        SimCLR(options(Recorder(stop_at=5))).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT,
                                                      checkpoint_dir=directory)
    assert checkpoint.read_meta(directory).steps_done == 4
    return directory


def _remove(pattern):
    for path in glob.glob(pattern):
        os.remove(path)


def _truncate(pattern):
    for path in glob.glob(pattern):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)


DAMAGE = {
    "newest_data_missing": (lambda d: _remove(f"{d}/state/ckpt-4.data*"), 2),
    "newest_data_truncated": (lambda d: _truncate(f"{d}/state/ckpt-4.data*"), 2),
    "newest_index_missing": (lambda d: _remove(f"{d}/state/ckpt-4.index"), 2),
    "checkpoint_index_file_missing": (lambda d: _remove(f"{d}/state/checkpoint"), 4),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_uses_the_newest_readable_state(damage, interrupted, tmp_path, caplog):
    directory = str(tmp_path / "stage")
    shutil.copytree(interrupted, directory)
    spoil, resumed_at = DAMAGE[damage]
    spoil(directory)
    recorder = Recorder()
    SimCLR(options(recorder)).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT,
                                       checkpoint_dir=directory)
    assert recorder.steps[0] == resumed_at and recorder.steps[-1] == 6
    assert checkpoint.read_meta(directory).finished
    if resumed_at == 2 and damage != "newest_index_missing":
        assert f"resuming from the older training state {directory}/state/ckpt-2 (skipped ckpt-4)" in caplog.text


def test_resume_without_any_state_but_steps_done_is_an_error(interrupted, tmp_path):
    directory = str(tmp_path / "stage")
    shutil.copytree(interrupted, directory)
    _truncate(f"{directory}/state/*.data*")
    with pytest.raises(ValueError, match=rf"^stage checkpoint {directory}: meta.json says 4 steps were done but "
                                         rf"{directory}/state holds only unreadable checkpoints \(ckpt-4, ckpt-2\); "
                                         rf"delete {directory} to restart the stage from step 0$"):
        SimCLR(options()).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT, checkpoint_dir=directory)
    shutil.rmtree(f"{directory}/state")
    with pytest.raises(ValueError, match=r"meta.json says 4 steps were done but .*/state holds no checkpoint; "):
        SimCLR(options()).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT, checkpoint_dir=directory)


def test_finished_stage_with_missing_or_truncated_weights(tmp_path):
    directory = str(tmp_path / "stage")
    encoder = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3),
                                keras.layers.GlobalAveragePooling2D()])
    head = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    checkpoint.save_stage(directory, encoder=encoder, method="simclr", backbone=B, config=C, steps_done=6,
                          head=head)
    weights, head_file = f"{directory}/encoder.weights.h5", f"{directory}/head.weights.h5"
    shutil.copy(head_file, tmp_path / "head.copy")
    _truncate(head_file)
    with pytest.raises(ValueError, match=rf"^weights file {head_file}: unreadable, truncated or of another model "
                                         r"\(.*\); delete its stage directory to retrain it$"):
        checkpoint.init_encoder(directory, encoder, backbone=B, head=head)
    _truncate(weights)
    with pytest.raises(ValueError, match=rf"^weights file {weights}: unreadable, truncated or of another model"):
        checkpoint.init_encoder(directory, encoder, backbone=B)
    os.remove(weights)
    message = (rf"^stage checkpoint {directory}: meta.json says finished but {weights} is missing; delete "
               rf"{directory}/meta.json and rerun the stage to rebuild it from its saved state \(or delete "
               rf"{directory} to retrain it\)$")
    with pytest.raises(ValueError, match=message):
        checkpoint.load_encoder(directory)
    with pytest.raises(ValueError, match=message):
        checkpoint.init_encoder(directory, encoder, backbone=B)


def test_finished_stage_missing_weights_is_rebuilt_as_the_message_says(interrupted, tmp_path):
    directory = str(tmp_path / "stage")
    shutil.copytree(interrupted, directory)
    SimCLR(options()).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT, checkpoint_dir=directory)
    os.remove(f"{directory}/{checkpoint.ENCODER_FILE}")
    with pytest.raises(ValueError, match="meta.json says finished"):
        SimCLR(options()).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT, checkpoint_dir=directory)
    os.remove(f"{directory}/{checkpoint.META_FILE}")  # what the message says
    recorder = Recorder()
    SimCLR(options(recorder)).pretrain(groups(), backbone=B, config=C, strategy=DEFAULT,
                                       checkpoint_dir=directory)
    assert recorder.steps == [6] and os.path.exists(f"{directory}/{checkpoint.ENCODER_FILE}")


@pytest.mark.parametrize("argv,level", [
    ([], 0), (["--verbosity=1"], 1), (["--verbosity", "2"], 2), (["-v=1"], 1), (["-v", "1"], 1),
    (["--v=-1"], -1), (["--verbosity=x"], 0), (["--seeds=1"], 0),
])
def test_verbosity_is_read_before_flags_are_parsed(argv, level):
    assert cli._verbosity(["prog", *argv]) == level


def test_progress_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch):
    try:
        assert cli.progress_enabled(True) is False  # pytest captures stderr: not a terminal
        from tensorflow_datasets.core.utils import tqdm_utils

        assert tqdm_utils._active is False
    finally:
        tfds.enable_progress_bar()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli.progress_enabled(True) is True
    try:
        assert cli.progress_enabled(False) is False
    finally:
        tfds.enable_progress_bar()


TQDM_CASES = [(["--noprogress"], True, True), ([], False, True), ([], True, False)]

# One Python process imports TensorFlow and Keras (which do not import tqdm) once, then forks a child
# per case that starts like an entry point: `quiet_start`, then the methods (and with them tqdm).
_TQDM_PROBE = """
import json, os, sys
import tensorflow, keras  # noqa: F401  (the slow imports, shared by the children)
assert "tqdm" not in sys.modules, "TensorFlow or Keras imported tqdm"
from benchmark import cli
found = []
for argv, tty in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        sys.stderr.isatty = lambda: tty
        cli.quiet_start(["prog", *argv])
        import baselines.pretrain, tqdm  # noqa: E401,F401
        os.write(write, str(tqdm.tqdm(total=1).disable).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        found.append(f.read())
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def tqdm_disabled():
    """`tqdm.tqdm(total=1).disable` in a fresh process per TQDM_CASES case (one subprocess)."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    done = subprocess.run([sys.executable, "-c", _TQDM_PROBE, json.dumps([c[:2] for c in TQDM_CASES])],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(TQDM_CASES)), ids=[
    "argv0-True-True", "argv1-False-True", "argv2-True-False"])
def test_tqdm_bars_are_off_from_process_start(case, tqdm_disabled):
    """tqdm reads TQDM_DISABLE once, at import: `quiet_start` must set it before the entry point
    imports the methods (whose pretraining bar is drawn with tqdm's defaults)."""
    argv, tty, disabled = TQDM_CASES[case]
    assert tqdm_disabled[case] == str(disabled), (argv, tty)


def test_cli_error_is_exactly_one_line_without_tensorflow_start_up_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "benchmark.run", "--seeds=-1", f"--output_dir={tmp_path}/o",
                           f"--data_dir={tmp_path}/d"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr == "error: --seeds=-1: seeds must be >= 0\n" and done.stdout == ""


BAD_DATA_CHECK_FLAGS = [
    ("--seed=-1", "--seed=-1: expected an integer >= 0"),
    ("--image_size=32", "--image_size=32: expected >= 64 (the checks read the 64px builds)"),
    ("--chexpert_patients=0", "--chexpert_patients=0: expected at least 10 (held-out parts need cases)"),
    ("--pad_patients=3", "--pad_patients=3: expected at least 10 (held-out parts need cases)"),
    ("--work_dir={file}", "--work_dir={file}: exists and is not a directory"),
    ("--work_dir={tmp}", "--work_dir={tmp}: not empty; the checks generate and build (and time the "
                         "build) from scratch, so give an empty or new folder"),
    ("stray", "unexpected arguments ['stray']; every setting is a --flag"),
    ("--metadata_only", "--metadata_only: needs --manual_dir (the real data folder)"),
    ("--timing", "--timing: needs --manual_dir (the real data folder)"),
    ("--manual_dir={tmp} --metadata_only --timing", "--metadata_only with --timing: timing decodes "
                                                     "and builds the images; give one of them"),
    ("--manual_dir={missing}", "--manual_dir={missing}: no such directory"),
    ("--manual_dir={tmp}", "--manual_dir={tmp}: holds none of the builder folders cxr_chexpert/, "
                           "cxr_nih14/, derm_ham10000/, derm_pad_ufes20/; expected one sub-folder "
                           "per builder"),
    ("--metadata_file=foo", "--metadata_file=foo: expected <builder>=<path>, e.g. "
                            "cxr_chexpert=chexpert_train.csv.gz"),
    ("--metadata_file=mri={file}", "--metadata_file=mri={file}: unknown builder 'mri'; expected one "
                                   "of cxr_chexpert, cxr_nih14, derm_ham10000, derm_pad_ufes20"),
    ("--metadata_file=cxr_nih14={missing}", "--metadata_file=cxr_nih14={missing}: no such file "
                                            "{missing}"),
    ("--metadata_file=cxr_nih14={file} --metadata_file=cxr_nih14={file}",
     "--metadata_file=cxr_nih14={file}: cxr_nih14 is given twice"),
]


@pytest.mark.parametrize("arg,message", BAD_DATA_CHECK_FLAGS, ids=[a for a, _ in BAD_DATA_CHECK_FLAGS])
def test_bad_data_check_flags_fail_in_one_line_before_any_work(arg, message, paths, monkeypatch):
    from benchmark import data_check

    monkeypatch.setattr(data_check, "run", _fail)
    try:
        with (parsed_flags(["data_check", *arg.format(**paths).split(" ")]) as positional,
              pytest.raises(SystemExit) as exit_info):
            data_check.main(positional)
    finally:
        tfds.enable_progress_bar()
    assert exit_info.value.code == "error: " + message.format(**paths)


@pytest.mark.parametrize("entry", ["data_check", "speed"])
def test_data_check_and_speed_turn_a_full_disk_into_one_line(entry, monkeypatch):
    from benchmark import data_check, speed

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/tfds/cxr_chexpert")

    module = {"data_check": data_check, "speed": speed}[entry]
    monkeypatch.setattr(module, "run" if entry == "data_check" else "measure", full)
    if entry == "speed":
        _speed_flags(monkeypatch, [entry])
    try:
        with parsed_flags([entry]), pytest.raises(SystemExit) as exit_info:
            module.main([entry])
    finally:
        tfds.enable_progress_bar()
    assert exit_info.value.code == "error: /w/tfds/cxr_chexpert: No space left on device"


@pytest.mark.parametrize("arg,message", [
    ("--batch_size=0", "--batch_size=0: expected a positive integer"),
    ("--configs=", "--configs= --methods=simclr,micle --modes=nondeterministic,deterministic: "
                   "expected at least one of each"),
    ("--methods=", "--configs=r50_64,bot50_64,r18_32,cpu,bot_cpu --methods= "
                   "--modes=nondeterministic,deterministic: expected at least one of each"),
    ("--modes=", "--configs=r50_64,bot50_64,r18_32,cpu,bot_cpu --methods=simclr,micle --modes=: "
                 "expected at least one of each"),
], ids=["--batch_size=0", "--configs=", "--methods=", "--modes="])
def test_bad_speed_flags_are_usage_errors(arg, message, monkeypatch):
    from absl import app

    from benchmark import speed

    monkeypatch.setattr(speed, "measure", _fail)
    _speed_flags(monkeypatch, ["speed", arg])
    with pytest.raises(app.UsageError, match=f"^{message}$"):
        speed.main(["speed"])


def _speed_flags(monkeypatch, argv):
    """`benchmark.speed`'s flags, parsed from `argv` into flag values of their own (its flags are
    defined only when it is the entry point), as the module's FLAGS."""
    from absl import flags

    from benchmark import speed

    values = flags.FlagValues()
    speed.define_flags(values)
    flags.DEFINE_integer("verbosity", -1, "absl's, read by main", flag_values=values)
    values(argv)
    monkeypatch.setattr(speed, "FLAGS", values)


def test_pretrain_seed_flag_sets_only_the_pretraining_seed(tmp_path):
    with parsed_flags(["run", "--pretrain_seed=3", "--pretrain_steps=7", "--seeds=0,1",
                       f"--output_dir={tmp_path}"]):
        cfg = run.config_from_flags()
    assert (cfg.preset.pretrain.seed, cfg.preset.pretrain.steps, cfg.preset.seeds) == (3, 7, (0, 1))
    assert runner.control_config(cfg).name == "random_init-pseed3"
