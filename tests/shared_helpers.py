"""Helpers several test files share: the toy board and submission builder, and running a function
in a forked child process."""
import importlib.util
import os
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
