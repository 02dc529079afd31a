import numpy as np

from cloudcli.data.cache import pack_masks, unpack_masks


def test_bit_layout_known_answer() -> None:
    masks = np.zeros((4, 1, 5), np.uint8)
    masks[0, 0, [0, 4]] = 1  # Fish -> bit 0
    masks[1, 0, [1, 4]] = 1  # Flower -> bit 1
    masks[2, 0, [2, 4]] = 1  # Gravel -> bit 2
    masks[3, 0, [3, 4]] = 1  # Sugar -> bit 3
    np.testing.assert_array_equal(pack_masks(masks), [[1, 2, 4, 8, 15]])


def test_round_trip_batched() -> None:
    masks = (np.random.default_rng(0).random((3, 4, 7, 9)) < 0.5).astype(np.uint8)
    packed = pack_masks(masks)
    assert packed.shape == (3, 7, 9) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_masks(packed, 4), masks)
