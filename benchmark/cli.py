"""What every command-line entry point shares: quiet TensorFlow start-up, progress bars only for a
terminal, and environment errors as one line.

Standard library only at import time: `quiet_tensorflow` must run before TensorFlow is imported.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

# absl spellings of the verbosity flag: --verbosity=1, --verbosity 1, -v=1, -v 1, --v=1.
_VERBOSITY = re.compile(r"--?(?:verbosity|v)(?:=(?P<value>.*))?")


def _verbosity(argv: list[str]) -> int:
    """The last --verbosity given in `argv` (0 when absent or not an integer)."""
    level = 0
    for i, arg in enumerate(argv[1:], start=1):
        match = _VERBOSITY.fullmatch(arg)
        if not match:
            continue
        value = match.group("value")
        if value is None and i + 1 < len(argv):
            value = argv[i + 1]
        try:
            level = int(value)
        except (TypeError, ValueError):
            pass
    return level


def quiet_start(argv: list[str]) -> None:
    """What an entry point does first, before anything imports tqdm or TensorFlow: turns every
    tqdm bar off when --noprogress is given or stderr is not a terminal (tqdm reads TQDM_DISABLE
    once, when it is imported), then `quiet_tensorflow`."""
    if "--noprogress" in argv[1:] or not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
    quiet_tensorflow(argv)


def quiet_tensorflow(argv: list[str]) -> None:
    """Keeps TensorFlow's C++ start-up notices (oneDNN, CUDA drivers, cuInit, absl's pre-init
    warning) off the terminal unless the user asked for them with --verbosity >= 1 or set
    TF_CPP_MIN_LOG_LEVEL: sets TF_CPP_MIN_LOG_LEVEL=3 and imports TensorFlow with the process's
    stderr pointed at /dev/null. Call from an entry point before anything imports TensorFlow.
    (A crash inside TensorFlow's import would then be silent; --verbosity=1 shows it.)"""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or _verbosity(argv) >= 1 or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow  # noqa: F401  (its import is what prints the notices)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def quiet_logs() -> None:
    """For a user who did not pass --verbosity: absl logs from WARNING up (TFDS logs every file it
    writes at INFO), and TensorFlow's Python logger only errors (its retracing warnings are about
    its own function caches, not about the run)."""
    from absl import logging

    import tensorflow as tf

    logging.set_verbosity(logging.WARNING)
    logging.get_absl_logger().addFilter(_drop_library_notices)
    tf.get_logger().setLevel("ERROR")


# TFDS notices that say nothing about the run: a deprecation aimed at its own code, and the
# "Variant folder ... has no dataset_info.json" of every build not made yet.
_LIBRARY_NOTICES = ("is deprecated", "has no dataset_info.json")


def _drop_library_notices(record) -> bool:
    """A logging filter: False for the `_LIBRARY_NOTICES`."""
    message = record.getMessage()
    return not any(notice in message for notice in _LIBRARY_NOTICES)


def progress_enabled(requested: bool) -> bool:
    """Whether to draw progress bars: when `requested` (--progress) and stderr is a terminal.
    Otherwise also turns off TFDS's build bars (tqdm's own are off from `quiet_start`)."""
    if requested and sys.stderr.isatty():
        return True
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return False


def error_line(e: BaseException) -> str:
    """A one-line message for an input or environment error: an OSError names its path(s) and
    reason, a missing package is named, a TensorFlow error gives its message's first line."""
    if isinstance(e, ModuleNotFoundError):
        return (f"this environment lacks the Python package {e.name!r}, which the run needs; install "
                "the suite's requirements (pip install -e .)")
    if isinstance(e, OSError) and e.filename is not None:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        return f"{where}: {e.strerror or e}"
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return str(text).strip().splitlines()[0]


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions an entry point that runs TensorFlow reports as one `error_line`: input and
    environment errors (ValueError, OSError, TensorFlow's OpError, e.g. a full disk while a
    checkpoint is saved, and ModuleNotFoundError, a package a library imports late)."""
    import tensorflow as tf

    return (ValueError, OSError, tf.errors.OpError, ModuleNotFoundError)


def exit_on_error(e: BaseException) -> None:
    """Exits with status 1 and `error: <one line>` on stderr."""
    sys.exit(f"error: {error_line(e)}")


@contextlib.contextmanager
def row_warnings() -> Iterator[None]:
    """Prints every skipped results line (`results.RowWarning`) raised inside as one `warning:`
    line on stderr, each message once, when the block ends; other warnings are shown as usual."""
    from benchmark.harness import results

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", results.RowWarning)
        try:
            yield
        finally:
            told = set()
            for w in caught:
                if not issubclass(w.category, results.RowWarning):
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
                elif str(w.message) not in told:
                    print(f"warning: {w.message}", file=sys.stderr)
                    told.add(str(w.message))


def use_folder_tasks(flag: str) -> None:
    """Makes the folder tasks of `--task=folder:<dir>[,folder:<dir>...]` known to this process by
    their names, so that rows of those tasks are read from these folders (wherever the rows say
    they were); ValueError naming the flag for anything else. Reading a folder task loads the
    builders, and so TensorFlow: quietly (`quiet_tensorflow`)."""
    items = list(filter(None, (flag or "").split(",")))
    if items:
        quiet_tensorflow(sys.argv)
    from benchmark.harness import tasks

    for item in items:
        if not item.startswith(tasks.FOLDER_PREFIX):
            raise ValueError(f"--task={flag}: expected {tasks.FOLDER_PREFIX}<dir>[,{tasks.FOLDER_PREFIX}<dir>...] "
                             "(the folders of folder tasks whose rows are read)")
        tasks.get_task(item)


def run_entry_point(action: Callable[[], T]) -> tuple[int, T | None]:
    """Runs `action` as an entry point must: a data error (ValueError) or OS error becomes one
    `error:` line on stderr and status 1, a skipped results line (`results.RowWarning`) one
    `warning:` line; returns (exit status, what `action` returned or None)."""
    from benchmark.harness import results

    with row_warnings():
        try:
            outcome = 0, action()
        except OSError as e:
            outcome = 1, None
            message = results.os_error_text(e)
        except ValueError as e:
            outcome = 1, None
            message = str(e)
    if outcome[0]:
        print(message if message.startswith("submission rejected") else f"error: {message}",
              file=sys.stderr)
    return outcome
