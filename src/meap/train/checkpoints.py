"""Checkpoints that can be trusted: every one carries a ``manifest.json`` (size and SHA-256 of each of its
files), so one damaged on disk after it was written is found on resume and the previous intact one is used."""

from __future__ import annotations

import json
from pathlib import Path

from meap.errors import warn
from meap.fsutil import sha256_file
from meap.rundir import checkpoint_dirs

MANIFEST_FILE = "manifest.json"


def write_manifest(checkpoint: Path) -> None:
    """Record the size and SHA-256 of every file of ``checkpoint`` in its ``manifest.json``."""
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(checkpoint).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    (checkpoint / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")


def checkpoint_damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be trusted (a missing, truncated or altered file), or None if it is intact."""
    try:
        files = json.loads((checkpoint / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST_FILE}"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['bytes']}"
        if sha256_file(path) != expected["sha256"]:
            return f"{name} does not match its SHA-256"
    return None


def intact_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that matches its manifest; each newer damaged one is reported."""
    checkpoints = checkpoint_dirs(root)
    for index in range(len(checkpoints) - 1, -1, -1):
        damage = checkpoint_damage(checkpoints[index])
        if damage is None:
            return checkpoints[index]
        fallback = f"resuming from {checkpoints[index - 1].name}" if index else "no earlier checkpoint"
        warn(f"{checkpoints[index]}: damaged ({damage}); {fallback}")
    return None


def last_checkpoint_note(checkpoints: list[Path]) -> str:
    if not checkpoints:
        return "No checkpoint was saved yet."
    return f"The last checkpoint, {checkpoints[-1]}, is intact: continue with --resume."
