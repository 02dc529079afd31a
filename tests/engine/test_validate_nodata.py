"""Validation counts with data.nodata: pixels without data count in no area, whatever is predicted there."""

import numpy as np
import torch

from cloudcli.engine.validate import seg_row_counts


def test_row_counts_leave_pixels_without_data_out() -> None:
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 3, 8, 10)).astype(np.float32))
    truth = (rng.random((2, 3, 8, 10)) > 0.5).astype(np.uint8)
    valid = np.ones((2, 8, 10), np.uint8)
    valid[0, :4, :6] = 0
    valid[1, 5:] = 0
    counts = seg_row_counts(logits, truth, valid=valid).numpy()
    pred, keep = torch.sigmoid(logits).numpy() > 0.5, valid[:, None].astype(bool)
    t = truth.astype(bool)
    for b in range(2):  # by hand: the pixels with data alone
        for k in range(3):
            p, tt = pred[b, k][keep[b, 0]], t[b, k][keep[b, 0]]
            assert counts[:, b, k].tolist() == [(p & tt).sum(), p.sum(), tt.sum()]
    changed = logits.clone()
    changed[torch.from_numpy(~keep).expand_as(changed)] = 50.0  # predicted everywhere without data
    moved = seg_row_counts(changed, truth, valid=valid).numpy()
    assert np.array_equal(moved, counts)
    assert not np.array_equal(seg_row_counts(changed, truth).numpy(), counts)  # without the mask they count
