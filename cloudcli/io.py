"""Atomic writes: an output appears whole or not at all, never half-written, and the output it
replaces stays whole until the new one takes its place.

Each output is written to a temporary sibling (`.NAME.PID.XXXX.tmp`), then swapped in: a file by
one rename, a folder by one exchange of the two names (Linux renameat2 RENAME_EXCHANGE; elsewhere
the old folder is moved aside first). A process killed while writing leaves its temporary sibling,
which the next write of the same output removes; a Ctrl-C waits while an output is swapped in and
its temporary sibling removed. Several outputs written in one `atomic_paths` block are swapped in
only once every one of them is written.

Reading what earlier stages wrote: `read_json` and `need_keys` turn a damaged JSON file into one
DataError naming the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.errors import DataError

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one step; False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_stale(path: Path) -> None:
    """Temporary siblings of `path` left by writers that were killed (their process is gone)."""
    prefix = f".{path.name}."
    for stale in (p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")):
        pid = stale.name[len(prefix) :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _swap_in(new: Path, path: Path, holder: Path) -> None:
    """`new` takes the place of `path`; whatever `path` was ends up inside `holder` (removed later)."""
    if path.is_dir() and not path.is_symlink() and new.is_dir():
        if _exchange(new, path):
            return
        os.rename(path, holder / "old")  # no exchange here: moved aside, so a kill leaves it findable
    elif path.is_dir() and not path.is_symlink():
        os.rename(path, holder / "old")
    elif new.is_dir() and (path.exists() or path.is_symlink()):
        path.unlink()
    os.replace(new, path)


@contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` only on success. A Ctrl-C
    while the temporary sibling is made, swapped in or removed waits until that is done."""
    path = Path(path)
    made = next((p for p in reversed([path.parent, *path.parent.parents]) if not p.exists()), None)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_stale(path)
    tmp, written = None, False
    try:
        with _interrupt_deferred():
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
        target = tmp / "new"  # made with the umask's permissions (mkdtemp makes its folder private)
        if is_dir:
            target.mkdir()
        yield target
        written = True
    except OSError as e:
        if e.filename is None:  # a write that failed deep inside a library: name the output
            e.filename = str(path)
        raise
    finally:
        with _interrupt_deferred():
            _finish(path, tmp, written, made)


def _finish(path: Path, tmp: Path | None, written: bool, made: Path | None) -> None:
    """Swap the written output in (if `written`), then remove the temporary folder and, when no
    output is there, the folders made for it."""
    try:
        if written and tmp is not None:
            _swap_in(tmp / "new", path, tmp)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if made is not None and not path.exists():
            _remove_empty(path.parent, made)


@contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block is done, then raise it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(*caught[0])
        elif caught and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to `top` while they are empty."""
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


@contextmanager
def atomic_paths(*paths: tuple[str | Path, bool]) -> Iterator[list[Path]]:
    """`atomic_path` for several outputs, given as (path, is_dir): one temporary target each, all
    swapped in once the block has written every one (none if it fails)."""
    with ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path, is_dir=is_dir)) for path, is_dir in paths]


def new_array(path: str | Path, shape: tuple[int, ...], dtype=np.uint8) -> np.memmap:
    """A new .npy file of `shape` mapped for writing, its disk blocks allocated at once: a full disk
    is an error naming the file here, not a SIGBUS when a page of the map is first written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            if size:
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from None
    return array


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true/false",
    int: "a whole number",
    float: "a number",
    type(None): "null",
}


def json_type(value: object) -> str:
    """What a parsed JSON value is, in JSON's words: "an object", "a list", "null"..."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def read_json(path: str | Path, fix: str, *, missing: str | None = None) -> dict:
    """The JSON object in the file at `path`. A file missing, a folder, not UTF-8, not JSON or not
    a JSON object is a DataError naming the path and what is wrong, ending with `fix` ("rerun `dvc
    repro tune`"; `missing`, when given, for a missing file)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {missing or fix}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a JSON file; {fix}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); {fix}") from None
    return parse_json(text, path, fix)


def parse_json(text: str, where: str | Path, fix: str) -> dict:
    """The JSON object in `text` (read from `where`); else a DataError naming `where`."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e}); {fix}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not a JSON object ({json_type(obj)}); {fix}")
    return obj


def need_keys(obj: dict, keys: dict[str, type | tuple[type, ...]], where: str | Path, fix: str) -> dict:
    """`obj` (a JSON object read from `where`), once each of `keys` is in it with a value of its
    type(s); else a DataError naming `where` and the key. `float` admits whole numbers too."""
    for key, kind in keys.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if key not in obj:
            raise DataError(f"{where}: no {key!r}; {fix}")
        value = obj[key]
        if not isinstance(value, (*kinds, int) if float in kinds else kinds) or (
            isinstance(value, bool) and bool not in kinds
        ):
            wanted = " or ".join(_JSON_TYPES[k] for k in kinds)
            raise DataError(f"{where}: {key!r} is {json_type(value)}, expected {wanted}; {fix}")
    return obj


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def private_dir(path: str | Path, root: str | Path = ".cloudcli") -> Path:
    """`path` created; when it lies under `root` (cloudcli's own folder in a project: resume
    states, run logs), `root` gets a .gitignore of `*`, so `git add -A` never takes them."""
    path, root = Path(path), Path(root)
    path.mkdir(parents=True, exist_ok=True)
    if root in path.parents or path == root:
        ignore = root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# cloudcli's working files (resume states, run logs): never committed\n*\n")
    return path
