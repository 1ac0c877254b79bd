"""Helpers several test files share: the toy board and submission builder, running a function
in a forked child process, absl flags parsed for an entry point called in-process, and
smoke-preset run configurations (and copies of shared runs)."""
import contextlib
import dataclasses
import importlib.util
import os
import shutil
import traceback
from pathlib import Path


def example_builder():
    """`tests/data/submission_example/build_example.py` as a module (toy boards and submissions)."""
    path = Path(__file__).parent / "data" / "submission_example" / "build_example.py"
    spec = importlib.util.spec_from_file_location("build_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fork(action) -> int:
    """Runs `action` in a child process; returns its pid (exit 0 when it returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 0
        try:
            action()
        except BaseException:
            traceback.print_exc()
            status = 1
        os._exit(status)
    return pid


def wait(pid: int) -> int:
    """The child's exit status, or -signal when a signal ended it."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@contextlib.contextmanager
def parsed_flags(argv):
    """absl's global FLAGS parsed from `argv` (argv[0]: the program) while the block runs, at their
    defaults before and after it; yields the positional arguments (what `app.run` passes `main`)."""
    from absl import flags

    flags.FLAGS.unparse_flags()
    try:
        yield flags.FLAGS(argv)
    finally:
        flags.FLAGS.unparse_flags()


def smoke_config(tmp_path, task, method, data_dir=None, **preset_changes):
    """A `runner.RunConfig` of the smoke preset (with `preset_changes`) writing to `tmp_path/out`,
    its data in `data_dir` (default `tmp_path/data`)."""
    from benchmark.harness import data, runner
    from benchmark.harness.presets import get_preset
    from benchmark.harness.tasks import get_task

    preset = dataclasses.replace(get_preset("smoke"), **preset_changes)
    return runner.RunConfig(
        method=method, task=get_task(task), preset=preset,
        data=data.DataConfig(data_dir=str(data_dir or Path(tmp_path) / "data"), manual_dir=None,
                             resolution=preset.resolution, synthetic_sizes=preset.synthetic_sizes,
                             synthetic_image_size=preset.synthetic_image_size),
        output_dir=str(Path(tmp_path) / "out"), progress=False)


def copy_run(cfg, output_dir, *, only=None):
    """`cfg` writing to `output_dir`, a copy of `cfg.output_dir` (or of its sub-folder `only`, e.g.
    "pretrain": a finished stage without its rows), so that a test can add to a shared run."""
    source = Path(cfg.output_dir)
    if only is None:
        shutil.copytree(source, output_dir)
    else:
        shutil.copytree(source / only, Path(output_dir) / only)
    return dataclasses.replace(cfg, output_dir=str(output_dir))
