"""Probability maps on disk: what `infer` and `ensemble` write and every later stage reads.

A split's maps, (N, C, H, W) uint8 = round(p * 255) at the scoring size, are a zarr v3 array
`<split>.zarr`: one chunk per image, SHARD images per file (a Kaggle-size OOF is ~170 files, not
5,546), each chunk delta-coded along its rows and compressed with Blosc/zstd. A model's maps are
smooth, so the differences of neighbouring pixels are mostly 0 and compress 5-15x on the demo's
models (docs/speed.md). Reading an image decompresses that image only; stages read in row order,
a batch at a time (`batches`), and never a class plane of every image (`maps[:, k]`).

`MapWriter` writes rows in order and a whole shard at a time: a shard written in parts is read
back and rewritten. The raw `<split>.npy` memory maps of earlier versions are still read.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numcodecs
import numpy as np
from numcodecs.compat import ndarray_copy

from cloudcli.errors import DataError

SHARD = 32  # images per shard file (23 MB raw at 350x525x4)
BATCH = 32  # images a stage reads at a time


def _zarr():
    """zarr, its codec threads capped at the stage's thread share (OMP_NUM_THREADS, as torch's)."""
    import zarr

    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        zarr.config.set({"threading.max_workers": int(threads)})
    return zarr


@numba.njit(cache=True, nogil=True)
def _undelta(enc: np.ndarray, dec: np.ndarray) -> None:
    total = np.uint8(0)
    for j in range(len(enc)):
        total += enc[j]
        dec[j] = total


class _Delta(numcodecs.Delta):
    """numcodecs' Delta, decoding uint8 with a compiled running sum (numpy's uint8 cumsum took
    60% of reading a map); the bytes are the same, so any zarr reader reads what this one writes."""

    codec_id = "delta"

    def decode(self, buf, out=None):
        if self.dtype != np.uint8 or self.astype != np.uint8:
            return super().decode(buf, out)
        enc = np.frombuffer(memoryview(buf), np.uint8) if not isinstance(buf, np.ndarray) else buf.view(np.uint8)
        dec = np.empty(enc.size, np.uint8)
        _undelta(enc.reshape(-1), dec)
        return ndarray_copy(dec, out)


numcodecs.register_codec(_Delta)  # zarr's numcodecs.delta codec decodes through it


def _codecs() -> dict:
    from zarr.codecs import BloscCodec
    from zarr.codecs.numcodecs import Delta

    with warnings.catch_warnings():  # Delta is numcodecs', not in the zarr v3 spec: zarr-python reads it
        warnings.simplefilter("ignore")
        return {
            "filters": [Delta(dtype="uint8")],
            "compressors": BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle"),
        }


def maps_path(folder: Path, split: str) -> Path:
    return folder / f"{split}.zarr"


class Maps:
    """(N, C, H, W) uint8 maps read lazily, by row or slice; a damaged store is one DataError."""

    def __init__(self, array, path: Path) -> None:
        self._array, self.path = array, path
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        try:
            return np.asarray(self._array[key])
        except (OSError, ValueError, RuntimeError, KeyError) as e:  # zarr and Blosc report damage so
            raise DataError(f"{self.path}: unreadable ({type(e).__name__}: {e}); {_REWRITE}") from None

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


_REWRITE = "rerun the stage that wrote it (dvc repro)"


def open_maps(folder: Path, split: str) -> Maps:
    """The maps of `split` in a prediction folder: `<split>.zarr`, else an earlier version's
    `<split>.npy`. FileNotFoundError when neither exists."""
    path = maps_path(folder, split)
    if not path.exists():
        legacy = folder / f"{split}.npy"
        if legacy.is_file():
            try:
                array = np.load(legacy, mmap_mode="r")
            except (ValueError, EOFError, OSError) as e:
                raise DataError(f"{legacy}: unreadable ({type(e).__name__}: {e}); {_REWRITE}") from None
            if array.ndim != 4 or array.dtype != np.uint8:
                raise DataError(
                    f"{legacy}: {array.dtype} maps of shape {array.shape}, expected (N, C, H, W) uint8; {_REWRITE}"
                )
            return Maps(array, legacy)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    zarr = _zarr()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = zarr.open_array(path, mode="r")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a zarr array of maps ({type(e).__name__}: {e}); {_REWRITE}") from None
    if array.ndim != 4 or array.dtype != np.uint8:
        raise DataError(f"{path}: {array.dtype} maps of shape {array.shape}, expected (N, C, H, W) uint8; {_REWRITE}")
    shards = sum(1 for f in (path / "c").rglob("*") if f.is_file() and f.stat().st_size) if (path / "c").is_dir() else 0
    if shards != -(-array.shape[0] // SHARD):  # zarr would read a missing shard as zeros
        raise DataError(
            f"{path}: {shards} of its {-(-array.shape[0] // SHARD)} shard files (a copy cut short?); {_REWRITE}"
        )
    return Maps(array, path)


def batches(n: int, size: int = BATCH) -> Iterator[slice]:
    """Row slices of `size` covering 0..n in order."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def read_ahead(arrays: list, size: int = BATCH) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """(rows, every array's maps of those rows) for each batch in order, the arrays all of one
    length. The next batch is read (and decompressed) in another thread while the caller works on
    this one: with the decoders and the numba kernels releasing the GIL, both cores work."""
    slices = list(batches(len(arrays[0]), size)) if arrays else []
    if not slices:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(lambda s: [a[s] for a in arrays], slices[0])
        for i, rows in enumerate(slices):
            block = pending.result()
            if i + 1 < len(slices):
                pending = pool.submit(lambda s: [a[s] for a in arrays], slices[i + 1])
            yield rows, block


def create_maps(path: Path, shape: tuple[int, ...]):
    """A new, empty `<split>.zarr` of `shape` (N, C, H, W) uint8; every shard is written, even one
    of zeros, so that a missing shard file is damage (open_maps checks)."""
    zarr = _zarr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.create_array(
            str(path),
            shape=tuple(shape),
            dtype="uint8",
            chunks=(1, *shape[1:]),
            shards=(SHARD, *shape[1:]),
            config={"write_empty_chunks": True},
            **_codecs(),
        )


class MapWriter:
    """A new `<split>.zarr` of `shape`, written in row order: `write(batch)` appends rows, `close()`
    checks that every row came. Whole shards are compressed and written as they fill, in another
    thread while the caller computes the next (one shard in flight); use it in a `with` block, so
    that a failure waits for that write before its folder is removed."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape, shard = path, tuple(shape), (SHARD, *shape[1:])
        self._array = create_maps(path, shape)
        self._buffer, self._filled, self._done = np.empty(shard, np.uint8), 0, 0
        self._pool, self._pending = ThreadPoolExecutor(1, thread_name_prefix="map-writer"), None

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:  # the stage failed: let the write in flight end, then the caller cleans up
            self._pool.shutdown(wait=True)

    def write(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch)
        if self._done + self._filled + len(batch) > self.shape[0]:
            raise ValueError(f"{self.path}: more than {self.shape[0]} rows written")
        while len(batch):
            take = min(SHARD - self._filled, len(batch))
            self._buffer[self._filled : self._filled + take] = batch[:take]
            self._filled, batch = self._filled + take, batch[take:]
            if self._filled == SHARD:
                self._flush()

    def _flush(self) -> None:
        if self._filled:
            self._wait()
            rows, block = slice(self._done, self._done + self._filled), self._buffer[: self._filled].copy()
            self._pending = self._pool.submit(self._array.__setitem__, rows, block)
            self._done, self._filled = self._done + self._filled, 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # a failed write (a full disk) raises here

    def close(self) -> None:
        try:
            self._flush()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
        if self._done != self.shape[0]:
            raise ValueError(f"{self.path}: {self._done} of {self.shape[0]} rows written")


def write_maps(path: Path, maps: np.ndarray) -> None:
    """All of `maps` (N, C, H, W) uint8 as a new `<split>.zarr` (tests, benchmarks, small outputs)."""
    with MapWriter(path, maps.shape) as writer:
        writer.write(maps)
