"""Which source produced a result row or a pretraining checkpoint (standard library only, so both
the harness and the methods can import it)."""
from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    """The git commit of the repository holding this package, with "-dirty" when tracked files
    are modified; "unknown" outside a git checkout (or before the first commit)."""
    repo = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args],
                              check=True, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        sha = git("rev-parse", "--verify", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")
