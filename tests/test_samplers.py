"""RandomSampler / RRandomSampler: counts, the gt prepending, the injectable draw; and, opt-in, the very
indices mmdet 2.28 / mmrotate 0.3.4 pick for the same seed (``$ROTDET_ORACLE_DIR/parts.npz`` from the
reference oracle: six cases incl. the RPN's and the RoI head's settings, ``neg_pos_ub`` and no gts)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rotdet.models.assigners import AssignResult
from rotdet.models.samplers import RandomSampler, RRandomSampler, sampler_from_config

ORACLE = Path(os.environ.get("ROTDET_ORACLE_DIR") or "/nonexistent-rotdet-oracle") / "parts.npz"
FIELDS = ("pos_inds", "neg_inds", "pos_is_gt", "pos_assigned_gt_inds", "pos_gt_labels", "bboxes")


@pytest.mark.skipif(not ORACLE.is_file(), reason="ROTDET_ORACLE_DIR with parts.npz not given")
def test_same_draw_as_mmdet_and_mmrotate():
    rec = np.load(ORACLE)
    for k in range(int(rec["num_sampler_cases"])):
        p = f"samp{k}_"
        num, frac, ub, add_gt, n, m, rotated, seed = rec[p + "case"].tolist()
        cls = RRandomSampler if rotated else RandomSampler
        # mmdet ran torch.manual_seed(seed) before sample(): the same stream, in a generator
        sampler = cls(int(num), frac, ub, bool(add_gt), generator=torch.Generator().manual_seed(int(seed)))
        gt_inds, labels = torch.from_numpy(rec[p + "gt_inds"]), torch.from_numpy(rec[p + "labels"])
        assign = AssignResult(int(m), gt_inds, torch.zeros(int(n)), labels)
        gt_labels = torch.from_numpy(rec[p + "gt_labels"]) if add_gt else None
        got = sampler.sample(
            assign, torch.from_numpy(rec[p + "boxes"]), torch.from_numpy(rec[p + "gts"]), gt_labels
        )
        for field in FIELDS:
            assert np.array_equal(getattr(got, field).numpy(), rec[p + field]), (k, field)


def _assignment(gen: torch.Generator, n: int, num_gts: int, pos_share: float = 0.3) -> AssignResult:
    u = torch.rand(n, generator=gen)
    gt_inds = torch.where(u < pos_share, torch.randint(1, num_gts + 1, (n,), generator=gen), 0)
    gt_inds = torch.where(u > 0.9, -1, gt_inds)  # some ignored
    labels = torch.where(gt_inds > 0, torch.randint(0, 15, (n,), generator=gen), -1)
    return AssignResult(num_gts, gt_inds, torch.zeros(n), labels)


@pytest.mark.parametrize(
    "case", [(256, 0.5, -1, 1000, 0.3), (512, 0.25, -1, 100, 0.3), (64, 0.5, 2, 500, 0.01)]
)
def test_counts_and_sets(case):
    num, frac, ub, n, share = case
    gen = torch.Generator().manual_seed(0)
    assign = _assignment(gen, n, 5, share)
    boxes = torch.rand(n, 6, generator=gen)
    res = RRandomSampler(num, frac, ub, add_gt_as_proposals=False, generator=gen).sample(
        assign, boxes, torch.rand(5, 5)
    )
    n_pos, n_neg = int((assign.gt_inds > 0).sum()), int((assign.gt_inds == 0).sum())
    want_pos = min(n_pos, int(num * frac))
    want_neg = min(n_neg, num - want_pos)
    if ub >= 0:
        want_neg = min(want_neg, int(ub * max(1, want_pos)))
    assert (res.pos_inds.numel(), res.neg_inds.numel()) == (want_pos, want_neg)
    for inds, flag in ((res.pos_inds, assign.gt_inds > 0), (res.neg_inds, assign.gt_inds == 0)):
        assert torch.equal(inds, inds.sort().values) and inds.unique().numel() == inds.numel()
        assert flag[inds].all()
    assert res.pos_bboxes.shape == (want_pos, 5)  # the score column dropped
    assert torch.equal(res.pos_gt_labels, assign.labels[res.pos_inds])
    assert torch.equal(res.pos_assigned_gt_inds, assign.gt_inds[res.pos_inds] - 1)


def test_gts_prepended_as_positives():
    gen = torch.Generator().manual_seed(1)
    assign = _assignment(gen, 50, 3)
    gts, gt_labels = torch.rand(3, 5, generator=gen), torch.tensor([4, 7, 9])
    res = RRandomSampler(512, 0.25, generator=gen).sample(
        assign, torch.rand(50, 5, generator=gen), gts, gt_labels
    )
    assert res.pos_inds[:3].tolist() == [0, 1, 2] and res.pos_is_gt.tolist()[:3] == [1, 1, 1]
    assert res.pos_is_gt[3:].sum() == 0 and res.pos_assigned_gt_inds[:3].tolist() == [0, 1, 2]
    assert res.pos_gt_labels[:3].tolist() == [4, 7, 9]
    assert torch.equal(res.pos_bboxes[:3], gts) and torch.equal(res.pos_gt_bboxes[:3], gts)
    assert int((assign.gt_inds > 0).sum()) + 3 == res.pos_inds.numel()  # all taken: 128 wanted
    assert assign.gt_inds.numel() == 50  # the caller's assignment is left alone
    with pytest.raises(ValueError, match="gt_labels"):
        RRandomSampler(512, 0.25).sample(assign, torch.rand(50, 5), gts)
    # without gts there is nothing to prepend and no labels are needed
    empty = _assignment(gen, 50, 1, pos_share=0.0)
    res = RRandomSampler(16, 0.25).sample(empty, torch.rand(50, 5), torch.zeros(0, 5))
    assert res.pos_inds.numel() == 0 and res.neg_inds.numel() == 16 and res.pos_gt_bboxes.shape == (0, 5)


def test_injected_draws():
    gen = torch.Generator().manual_seed(2)
    assign = _assignment(gen, 400, 4)
    boxes = torch.rand(400, 4, generator=gen)
    pos, neg = torch.nonzero(assign.gt_inds > 0).flatten(), torch.nonzero(assign.gt_inds == 0).flatten()
    # the identity "permutation" takes the first candidates
    first = RandomSampler(64, 0.5, add_gt_as_proposals=False, permutation=lambda n, device: torch.arange(n))
    res = first.sample(assign, boxes, torch.rand(4, 4))
    assert torch.equal(res.pos_inds, pos[:32]) and torch.equal(res.neg_inds, neg[:32])
    # a generator reproduces the default generator's stream after torch.manual_seed, draw for draw
    seeded = RandomSampler(64, 0.5, add_gt_as_proposals=False, generator=torch.Generator().manual_seed(7))
    got = [seeded.sample(assign, boxes, torch.rand(4, 4)) for _ in range(2)]
    torch.manual_seed(7)
    want_pos = pos[torch.randperm(pos.numel())[:32]].sort().values
    want_neg = neg[torch.randperm(neg.numel())[:32]].sort().values
    assert torch.equal(got[0].pos_inds, want_pos) and torch.equal(got[0].neg_inds, want_neg)
    assert not torch.equal(got[1].pos_inds, got[0].pos_inds)  # the stream goes on
    with pytest.raises(ValueError, match="permutation"):
        RandomSampler(64, 0.5, permutation=lambda n, device: torch.arange(n - 1)).sample(
            assign, boxes, torch.zeros(0, 4)
        )


def test_from_config():
    rpn = sampler_from_config(
        dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False)
    )
    rcnn = sampler_from_config(
        dict(type="RRandomSampler", num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True)
    )
    assert type(rpn) is RandomSampler and rpn.BOX_DIM == 4 and not rpn.add_gt_as_proposals
    assert type(rcnn) is RRandomSampler and rcnn.BOX_DIM == 5 and rcnn.num == 512
    with pytest.raises(ValueError, match="OHEMSampler"):
        sampler_from_config(dict(type="OHEMSampler", num=512, pos_fraction=0.25))
    with pytest.raises(ValueError, match="unknown keys"):
        sampler_from_config(dict(type="RandomSampler", num=1, pos_fraction=0.5, floor_thr=-1))
