"""The kill loop of tests/test_board_integrity.py, in a small process (forking it is cheap).

    python tests/_board_kill_worker.py JOURNALED LANDED SCRATCH

JOURNALED is a copy of the toy example whose submit was SIGKILLed just after writing its commit
journal; LANDED the leaderboard folder as the undisturbed submit left it. For every k, a copy of
JOURNALED's leaderboard folder (journal paths are relative to it) has its commit completed (`journal.roll_forward`, the commit's own second half) by a
child SIGKILLed at its k-th file operation, then the next writer takes the board's lock
(`journal.board_lock`, what every writer does first). Prints {"steps": n, "differ": [k, ...]} as
its last line: the k whose board then differs from LANDED.
"""
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from benchmark.board import journal

OPERATIONS = ("replace", "link", "unlink", "rmdir", "fsync", "chmod", "mkdir")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def complete_in_child(board: Path, kill_at: int) -> int:
    """Completes the journaled commit of `board` in a child killed (SIGKILL) at its `kill_at`-th
    file operation (0: never; it then exits with 100 + the number of operations). Returns the
    child's exit code (-9 when killed)."""
    pid = os.fork()
    if pid == 0:
        seen = [0]
        for name in OPERATIONS:
            def counted(*args, _real=getattr(os, name), **kwargs):
                seen[0] += 1
                if seen[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return _real(*args, **kwargs)
            setattr(os, name, counted)
        journal.roll_forward(journal.journal_path(board / "results.jsonl"))
        os._exit(100 + seen[0])
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main(journaled: Path, landed: Path, scratch: Path) -> None:
    count = scratch / "count"
    shutil.copytree(journaled / "leaderboard", count)
    steps = complete_in_child(count, 0) - 100
    expected = snapshot(landed)
    differ = []
    for k in range(1, steps + 1):
        board = scratch / f"k{k}"
        shutil.copytree(journaled / "leaderboard", board)
        if complete_in_child(board, k) != -signal.SIGKILL:
            differ.append(k)
            continue
        with journal.board_lock(board / "results.jsonl", [board]):
            pass
        if snapshot(board) != expected:
            differ.append(k)
        shutil.rmtree(board)
    print(json.dumps({"steps": steps, "differ": differ}))


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
