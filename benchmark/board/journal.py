"""The write-ahead journal that makes a board commit atomic, and the board's lock.

A commit stages every new file (fsynced) in staging folders beside their targets, then writes the
journal `<results file>.journal` (atomically: it exists complete or not at all) listing each
staged file and its target, then renames the staged files onto their targets and removes the
staging folders and the journal. Whoever next holds the board's lock (`benchmark.submit`,
`benchmark.leaderboard`) first runs `recover`: a journal left by a killed writer is rolled
forward (the commit lands whole); without a journal the staged files were never committed and
are deleted with the other left-overs (staging folders, `atomic_writer` temporaries). So the board
is always either before or after a commit, whenever a writer is killed.

Paths in the journal are relative to its folder, so a board can be moved with its journal.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from benchmark.harness import results

JOURNAL_SUFFIX = ".journal"
STAGING_PREFIX = ".submit-staging-"
FORMAT = 1


def journal_path(results_path: Path) -> Path:
    """Where the journal of a commit to the board of `results_path` is written."""
    return results_path.with_name(results_path.name + JOURNAL_SUFFIX)


@contextlib.contextmanager
def board_lock(results_path: Path, board_dirs: Iterable[Path] = ()) -> Iterator[None]:
    """Holds the exclusive lock of the results file and of every board folder in `board_dirs`
    (each folder's `results.jsonl.lock`), taken in path order so writers never deadlock, and
    completes or clears whatever an interrupted writer left (`recover`) before the block."""
    locks = sorted({results.lock_path(results_path).absolute()}
                   | {results.lock_path(Path(d) / "results.jsonl").absolute() for d in board_dirs})
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(results.file_lock(lock))
        recover(results_path, board_dirs)
        yield


def recover(results_path: Path, board_dirs: Iterable[Path] = ()) -> None:
    """Rolls forward the commit a killed writer journaled for `results_path`, then deletes the
    staging folders and temporaries left in its folder and in `board_dirs`. Call under the
    board's exclusive lock."""
    journal = journal_path(results_path)
    if os.path.lexists(journal):
        roll_forward(journal)
    for folder in {results_path.parent, *map(Path, board_dirs)}:
        if not folder.is_dir():
            continue
        for leftover in folder.iterdir():
            if leftover.name.startswith(STAGING_PREFIX) and leftover.is_dir():
                shutil.rmtree(leftover)
            elif results.TEMPORARY_NAME.fullmatch(leftover.name) and not leftover.is_dir():
                leftover.unlink()


def _entries(journal: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(staged file, target) pairs and staging folders of a journal, as absolute paths."""
    base = journal.parent
    try:
        record = json.loads(journal.read_bytes())
        moves = [(base / staged, base / final) for staged, final in record["moves"]]
        staging = [base / d for d in record["staging"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{journal}: not a format {FORMAT} commit journal ({e}); it was not "
                         "written by benchmark.submit; move it away to use the board") from None
    if record.get("format") != FORMAT:
        raise ValueError(f"{journal}: not a format {FORMAT} commit journal; move it away to use "
                         "the board")
    return moves, staging


def _backup(staged: Path) -> Path:
    return staged.with_name(staged.name + ".old")


def _forward(moves: Sequence[tuple[Path, Path]], done: list[tuple[Path, Path, bool]]) -> None:
    """Renames every staged file still present onto its target (keeping the target's
    permissions, a hard-linked backup of it beside the staged file); appends (staged, target,
    backed up) to `done` for each rename."""
    for staged, final in moves:
        if not os.path.lexists(staged):
            continue  # renamed before the writer was killed
        with results.naming_file(final):
            if not final.parent.is_dir():
                final.parent.mkdir(parents=True)
            backed_up = os.path.lexists(final)
            if backed_up:
                if os.path.lexists(_backup(staged)):  # a killed writer's
                    os.unlink(_backup(staged))
                results.refuse_link(final)
                os.chmod(staged, stat.S_IMODE(os.stat(final).st_mode))
                os.link(final, _backup(staged), follow_symlinks=False)
            os.replace(staged, final)
        done.append((staged, final, backed_up))
    for folder in sorted({final.parent for _, final in moves}):
        with results.naming_file(folder):
            results.fsync_dir(folder)


def _finish(journal: Path, staging: Sequence[Path]) -> None:
    """Removes a landed commit's staging folders and journal (not fsynced: a journal that
    reappears after a crash only repeats renames already done)."""
    for folder in staging:
        shutil.rmtree(folder, ignore_errors=True)
    with results.naming_file(journal):
        os.unlink(journal)


def roll_forward(journal: Path) -> None:
    """Completes the commit `journal` describes and removes it (safe to repeat if killed)."""
    moves, staging = _entries(journal)
    _forward(moves, [])
    _finish(journal, staging)


def commit(journal: Path, moves: Sequence[tuple[Path, Path]], staging: Sequence[Path]) -> None:
    """Moves the staged files (fsynced) onto their targets, all or nothing: journals the moves,
    renames, removes the journal. An error while renaming puts every target back, re-files the
    staged files (so a kill during that still rolls forward) and re-raises; a kill at any point
    leaves the journal to `recover`."""
    base = journal.parent
    record = {"format": FORMAT,
              "moves": [[os.path.relpath(s, base), os.path.relpath(f, base)] for s, f in moves],
              "staging": [os.path.relpath(d, base) for d in staging]}
    results.write_bytes(journal, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    done: list[tuple[Path, Path, bool]] = []
    try:
        _forward(moves, done)
    except BaseException:
        with contextlib.suppress(OSError):  # else the journal stays, and the commit lands later
            for staged, final, backed_up in reversed(done):
                os.replace(final, staged)
                if backed_up:
                    os.replace(_backup(staged), final)
                else:
                    with contextlib.suppress(OSError):
                        os.removedirs(final.parent)
            os.unlink(journal)
        raise
    _finish(journal, staging)
