"""Writing files so that a reader (or a resumed run) sees all of one or none of it: the one implementation.

A file is written beside its target under a hidden temporary name and renamed over it (``os.replace`` is
atomic within a file system); a directory is filled under a staging name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def default_cache_dir() -> Path:
    """Where meap keeps what it makes once and reuses (the prepared built-in corpus, converted packaged
    models): ``$MEAP_CACHE``, else ``~/.cache/meap``."""
    return Path(os.environ.get("MEAP_CACHE") or Path.home() / ".cache" / "meap")


def temporary_name(path: Path) -> Path:
    """The hidden sibling a write of ``path`` (a file or a directory) goes through; per process, so concurrent
    writers do not collide."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fresh_staging_dir(path: Path) -> Path:
    """An empty :func:`temporary_name` directory to write ``path`` in, after deleting those of processes
    that are gone (killed, crashed) and this process's own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(\d+)(\.old)?")
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and (int(match[1]) == os.getpid() or not _process_alive(int(match[1]))):
            shutil.rmtree(entry, ignore_errors=True)
    staging = temporary_name(path)
    staging.mkdir()
    return staging


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, but another user's
    return True


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open ``path`` for writing (``"w"`` text in UTF-8, ``"wb"`` bytes); it appears whole when the block
    ends, and not at all (the old file kept) if the block raises."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with open(temporary, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def atomic_write_lines(path: str | Path, lines) -> None:
    """Each of ``lines`` (any iterable of strings, written as it is consumed) and a newline after it."""
    with atomic_open(path) as handle:
        for line in lines:
            handle.write(line + "\n")


def atomic_write_jsonl(path: str | Path, rows) -> None:
    """Each of ``rows`` as one line of JSON (non-ASCII kept as it is)."""
    atomic_write_lines(path, (json.dumps(row, ensure_ascii=False) for row in rows))


def atomic_write_json(path: str | Path, value, **dump_options) -> None:
    atomic_write_text(path, json.dumps(value, **{"indent": 2, **dump_options}) + "\n")


def write_json_gz(path: str | Path, value) -> None:
    """``value`` as gzipped JSON at ``path`` (parents created; whole or not at all; the same bytes for the
    same value: no file name or time in the gzip header)."""
    import gzip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) as out:
        out.write(json.dumps(value).encode("utf-8"))


def read_json_gz(path: str | Path):
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as text:
        return json.load(text)


def publish_dir(staging: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing what was there: the old one is renamed aside
    and deleted only once the new one is in place, so a process killed in between loses neither whole."""
    if not final.exists():
        os.replace(staging, final)
        return
    old = staging.with_name(staging.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
