"""The map store: rows written in order come back exactly, by row, slice or class; damage is one
DataError. (Stages on the raw .npy of earlier versions: tests/stages/test_tune.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cloudcli.data.maps import SHARD, MapWriter, maps_path, open_maps, read_ahead, write_maps
from cloudcli.errors import DataError


@pytest.mark.parametrize("n, step", [(0, 1), (1, 1), (SHARD, 5), (2 * SHARD + 3, 7), (70, 70)])
def test_rows_written_in_batches_read_back_exactly(tmp_path, n, step) -> None:
    maps = np.random.default_rng(n).integers(0, 256, (n, 4, 9, 13), dtype=np.uint8)
    with MapWriter(maps_path(tmp_path, "oof"), maps.shape) as writer:
        for start in range(0, n, step):
            writer.write(maps[start : start + step])
    read = open_maps(tmp_path, "oof")
    assert read.shape == maps.shape and len(read) == n
    np.testing.assert_array_equal(read[:], maps)
    if n:
        np.testing.assert_array_equal(read[n - 1], maps[n - 1])
        np.testing.assert_array_equal(read[1:n, 2], maps[1:n, 2])
    got = [block[0] for _, block in read_ahead([read], 6)]
    np.testing.assert_array_equal(np.concatenate(got) if got else maps, maps)
    files = [p for p in (tmp_path / "oof.zarr").rglob("*") if p.is_file()]
    assert len(files) <= 1 + -(-n // SHARD)  # zarr.json and a file per shard (none for an empty one)


def test_a_writer_refuses_extra_rows_and_a_close_with_rows_missing(tmp_path) -> None:
    with pytest.raises(ValueError, match="more than 3 rows"), MapWriter(maps_path(tmp_path, "a"), (3, 1, 2, 2)) as w:
        w.write(np.zeros((4, 1, 2, 2), np.uint8))
    writer = MapWriter(maps_path(tmp_path, "b"), (3, 1, 2, 2))
    writer.write(np.zeros((2, 1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="2 of 3 rows"):
        writer.close()


def test_damaged_stores_are_one_error_naming_them(tmp_path) -> None:
    write_maps(maps_path(tmp_path, "oof"), np.ones((40, 4, 8, 8), np.uint8))
    shard = next(p for p in sorted((tmp_path / "oof.zarr").rglob("*")) if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(shard.read_bytes()[:-50])  # truncated, as by a copy cut short
    with pytest.raises(DataError, match=r"oof.zarr: unreadable .*rerun"):
        open_maps(tmp_path, "oof")[:]
    shard.unlink()  # a shard lost: zarr alone would read zeros
    with pytest.raises(DataError, match=r"oof.zarr: 1 of its 2 shard files"):
        open_maps(tmp_path, "oof")
    (tmp_path / "oof.zarr/zarr.json").write_text("{")
    with pytest.raises(DataError, match=r"oof.zarr: not a zarr array of maps"):
        open_maps(tmp_path, "oof")
    write_maps(maps_path(tmp_path, "flat"), np.ones((2, 1, 3, 3), np.uint8))
    shutil.rmtree(tmp_path / "flat.zarr")
    with pytest.raises(FileNotFoundError):
        open_maps(tmp_path, "flat")
    (tmp_path / "flat.npy").write_bytes(b"")  # an earlier version's maps, empty
    with pytest.raises(DataError, match=r"flat.npy: unreadable"):
        open_maps(tmp_path, "flat")
    np.save(tmp_path / "flat.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match=r"flat.npy: float32 maps of shape \(2, 3\)"):
        open_maps(tmp_path, "flat")


def test_a_shard_of_zeros_is_written_too(tmp_path) -> None:
    write_maps(maps_path(tmp_path, "oof"), np.zeros((SHARD + 1, 4, 8, 8), np.uint8))  # an empty image set: on disk
    np.testing.assert_array_equal(open_maps(tmp_path, "oof")[:], 0)
