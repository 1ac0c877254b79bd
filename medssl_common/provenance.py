"""Which source and which machine produced a result row or a pretraining checkpoint (standard
library only, so both the harness and the methods can import it)."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

# The packages whose source determines what a run computes.
CODE_PACKAGES = ("baselines", "benchmark", "medssl_common", "tfds_builders")
# CPU features that change which kernels (and so which float round-off) TensorFlow uses.
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
              "amx_bf16", "amx_tile", "amx_int8", "avx_vnni", "asimd", "sve")


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


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


def code_digest(root: str | os.PathLike | None = None) -> str:
    """SHA-256 over the relative paths and bytes of every `.py` file of `CODE_PACKAGES` under
    `root` (default: this checkout), committed or not: equal digests mean the same code computed.
    Unlike `code_version`, it does not change when only results, tests or documents change."""
    root = Path(root) if root is not None else _root()
    h = hashlib.sha256()
    files = sorted(p for package in CODE_PACKAGES for p in (root / package).rglob("*.py")
                   if "__pycache__" not in p.parts)
    for path in files:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(8, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _cpu_info() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown", []
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [f for f in _ISA_FLAGS if f in flags]


def machine() -> dict[str, object]:
    """The kind of machine a result was computed on: architecture, CPU model, the ISA features
    that select TensorFlow's CPU kernels, and whether oneDNN kernels were on. Byte-identical
    results are expected only between machines of the same kind."""
    model, isa = _cpu_info()
    return {"arch": platform.machine(), "cpu": model, "isa": isa,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")}


def machine_kind(record: dict) -> tuple:
    """What must match for byte-identical results: architecture, ISA features and oneDNN (not the
    CPU's marketing name)."""
    return (record.get("arch"), tuple(record.get("isa") or ()), record.get("onednn"))
