"""Atomic file writes (a reader never sees a half-written file), the one reader of ``.npz`` files
(never unpickling), and the reader of a run's metrics."""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class NpzError(ValueError):
    """A file that should be an ``.npz`` of plain arrays is not one; the message says what it is."""


_ZIP_MAGIC = b"PK"  # an .npz is a zip archive (an empty one starts "PK\x05\x06")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read whole. Never unpickles: an array of Python
    objects is refused (unpickling can run code). numpy alone would call any file that is not a zip
    or ``.npy`` "pickled data"; this says which of not-an-npz, truncated, or object arrays it is."""
    path = Path(path)
    with open(path, "rb") as f:  # FileNotFoundError as it is: each caller says what it needed the file for
        head = f.read(6)
    if not head.startswith(_ZIP_MAGIC):
        kind = "a .npy array" if head.startswith(b"\x93NUMPY") else "empty" if not head else f"starts with {head!r}"
        raise NpzError(f"{path} is not an .npz file (a zip archive of arrays): {kind}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        if isinstance(e, ValueError) and "pickle" in str(e).lower():  # numpy's refusal of an object array
            raise NpzError(
                f"{path} holds pickled Python objects; expoft never unpickles (it can run code): "
                "save plain numeric arrays"
            ) from e
        raise NpzError(f"{path} is not a readable .npz file ({e}); is it truncated or corrupted?") from e


def write_json(path: str | os.PathLike, obj, sort_keys: bool = False) -> Path:
    """``obj`` as indented JSON at ``path``, written atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=sort_keys).encode()))


def _first_free(path: Path, sep: str) -> Path:
    """``path``, or the first of ``path<sep>1``, ``path<sep>2``, ... that does not exist yet."""
    n, free = 0, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.name}{sep}{n}")
    return free


def keep_as_backup(*paths: Path) -> list[Path]:
    """Move each existing file aside to the first free ``NAME.bak``, ``NAME.bak.1``, ... (a second
    backup never replaces the first); returns where they went."""
    moved = []
    for path in map(Path, paths):
        if path.exists():
            backup = _first_free(path.with_name(path.name + ".bak"), ".")
            os.replace(path, backup)
            moved.append(backup)
    return moved


def move_aside(folder: Path, names: Iterable[str]) -> Path:
    """Move the entries ``names`` of ``folder`` that exist into a new ``folder/replaced-<UTC
    time>/`` (``-1``, ``-2``, ... when that is taken); returns it. Nothing is deleted."""
    stamp = time.strftime("replaced-%Y%m%d-%H%M%S", time.gmtime())
    dest = _first_free(folder / stamp, "-")
    dest.mkdir()
    for name in names:
        if (folder / name).exists():
            os.replace(folder / name, dest / name)
    return dest


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run folder's ``metrics.jsonl``, one dict each.

    A run appends a row at a time, so the file can end in a row cut short: by a kill, or because
    the run is still writing it. A last line without its newline that is not whole JSON is left
    out. Any other line that is not JSON raises: the file was edited or damaged, and a reader that
    skipped it would report figures from a part of the run."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e}); the file was damaged") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it: a row being written or cut by a kill
                break
            raise ValueError(f"{path}, line {number}: not a JSON row ({e}); the file was edited or damaged") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: a row is a JSON object, not {line.strip()[:40]!r}")
        rows.append(row)
    return rows
