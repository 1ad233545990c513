"""mmrotate 0.3.4's Gaussian box losses (GDLoss, GDLoss_v1) against float64 textbook formulas, their
clamps on degenerate boxes, their reductions, and the decoded-box path of the dense heads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rotdet.models.gaussian_losses import (
    GDLoss,
    GDLossV1,
    gaussian_postprocess,
    xy_stddev_pearson_to_xy_sigma,
    xy_wh_r_to_xy_sigma,
)
from rotdet.models.losses import LossSpec, build_loss, dense_head_loss
from rotdet.models.targets import AnchorTargets

# ------------------------------------------------------------------ float64 references (numpy only)


def np_gaussian(box) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a box: the rectangle's half sides as standard deviations along its axes."""
    cx, cy, w, h, a = (float(v) for v in box)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.array([cx, cy]), rot @ np.diag([w * w / 4, h * h / 4]) @ rot.T


def np_kl(p, q) -> float:
    """KL(N_p || N_q) for 2-D Gaussians, the general closed form."""
    (mu_p, s_p), (mu_q, s_q) = p, q
    inv_q = np.linalg.inv(s_q)
    d = mu_q - mu_p
    return 0.5 * (
        np.trace(inv_q @ s_p) + d @ inv_q @ d - 2 + np.linalg.slogdet(s_q)[1] - np.linalg.slogdet(s_p)[1]
    )


def np_sqrtm(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(m)
    return vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def np_w2_squared(p, q) -> float:
    """Squared 2-Wasserstein distance of two Gaussians."""
    (mu_p, s_p), (mu_q, s_q) = p, q
    root = np_sqrtm(s_p)
    return float(np.sum((mu_p - mu_q) ** 2) + np.trace(s_p + s_q - 2 * np_sqrtm(root @ s_q @ root)))


def np_bhattacharyya(p, q) -> float:
    (mu_p, s_p), (mu_q, s_q) = p, q
    s = 0.5 * (s_p + s_q)
    d = mu_p - mu_q
    return float(
        d @ np.linalg.inv(s) @ d / 8 + 0.5 * math.log(np.linalg.det(s) / math.sqrt(np.linalg.det(s_p @ s_q)))
    )


def box_pairs(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and target boxes ``[n, 5]``: targets of 4-200 px and aspect up to 8, predictions
    near them (the regime a trained head sees) and some far off."""
    g = torch.Generator().manual_seed(seed)
    size = torch.exp(torch.empty(n, 2).uniform_(math.log(4), math.log(200), generator=g))
    target = torch.cat(
        [torch.rand(n, 2, generator=g) * 500, size, (torch.rand(n, 1, generator=g) - 0.5) * math.pi], 1
    )
    jitter = torch.randn(n, 5, generator=g) * torch.tensor([3.0, 3.0, 0.2, 0.2, 0.3])
    jitter[n // 2 :] *= 8  # far-off predictions too
    pred = target.clone()
    pred[:, :2] += jitter[:, :2]
    pred[:, 2:4] *= jitter[:, 2:4].exp()
    pred[:, 4] += jitter[:, 4]
    return pred, target


# ------------------------------------------------------------------------------------ the Gaussians
def test_box_to_gaussian_matches_the_rectangle_moments():
    pred, _ = box_pairs(16)
    mu, sigma = xy_wh_r_to_xy_sigma(pred.double())
    for i in range(16):
        ref_mu, ref_sigma = np_gaussian(pred[i].double())
        np.testing.assert_allclose(mu[i].numpy(), ref_mu, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sigma[i].numpy(), ref_sigma, rtol=1e-12, atol=1e-9)
    # leading dims are kept; sides are clamped to [1e-7, 1e7]
    boxes = torch.tensor([[[0.0, 0.0, 0.0, 1e9, 0.0]]])
    mu, sigma = xy_wh_r_to_xy_sigma(boxes)
    assert mu.shape == (1, 1, 2) and sigma.shape == (1, 1, 2, 2)
    torch.testing.assert_close(sigma[0, 0].diagonal(), torch.tensor([0.25e-14, 0.25e14]))
    # the Pearson form: var_x, var_y on the diagonal, rho * sx * sy off it (rho clamped below 1)
    _, s = xy_stddev_pearson_to_xy_sigma(torch.tensor([[0.0, 0.0, 2.0, 3.0, 1.0]], dtype=torch.float64))
    np.testing.assert_allclose(s[0].numpy(), [[4, 6 * (1 - 1e-7)], [6 * (1 - 1e-7), 9]], rtol=1e-12)


# ------------------------------------------------------------------------- GDLoss against formulas
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gdloss_kld_is_kl_of_target_from_prediction(dtype):
    pred, target = box_pairs()
    raw = GDLoss("kld", fun="none", tau=0, sqrt=False).elementwise(pred.to(dtype), target.to(dtype))
    ref = np.array(
        [np_kl(np_gaussian(t), np_gaussian(p)) for p, t in zip(pred.double(), target.double(), strict=True)]
    )
    # float32 (what training runs in) loses digits on far-off predictions of thin boxes: the
    # determinant of a thin box's covariance cancels; the near half (a trained head's regime) keeps 1e-4
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    near = slice(None) if dtype == torch.float64 else slice(0, len(ref) // 2)
    np.testing.assert_allclose(raw.double().numpy()[near], ref[near], rtol=tol, atol=tol)
    if dtype == torch.float32:
        np.testing.assert_allclose(raw.double().numpy(), ref, rtol=0.05)
    # the stable configs' form: log1p, then 1 - 1 / (1 + .)
    stable = GDLoss("kld", fun="log1p", tau=1, sqrt=False).elementwise(pred.to(dtype), target.to(dtype))
    np.testing.assert_allclose(
        stable.double().numpy()[near], 1 - 1 / (1 + np.log1p(ref[near])), rtol=tol, atol=tol
    )
    # the default sqrt=True roots the divergence first
    rooted = GDLoss("kld", fun="sqrt", tau=2).elementwise(pred.double(), target.double())
    np.testing.assert_allclose(rooted.numpy(), 1 - 1 / (2 + np.sqrt(np.sqrt(ref))), rtol=1e-9)
    # alpha divides the centre term 0.5 d^T S_p^-1 d (the KL of two Gaussians of covariance S_p) by alpha^2
    p64, t64 = pred.double(), target.double()
    centre = np.array(
        [np_kl(np_gaussian(torch.cat([t[:2], p[2:]])), np_gaussian(p)) for p, t in zip(p64, t64, strict=True)]
    )
    whole = GDLoss("kld", fun="none", tau=0, sqrt=False).elementwise(p64, t64).numpy()
    alpha2 = GDLoss("kld", fun="none", tau=0, sqrt=False, alpha=2.0).elementwise(p64, t64)
    np.testing.assert_allclose(alpha2.numpy(), whole - 0.75 * centre, rtol=1e-9, atol=1e-9)


def test_gdloss_gwd_is_the_wasserstein_distance():
    pred, target = box_pairs()
    pairs = [(np_gaussian(p), np_gaussian(t)) for p, t in zip(pred.double(), target.double(), strict=True)]
    w2 = np.array([np_w2_squared(p, t) for p, t in pairs])
    raw = GDLoss("gwd", fun="none", tau=0, normalize=False).elementwise(pred.double(), target.double())
    np.testing.assert_allclose(raw.numpy(), np.sqrt(w2), rtol=1e-7, atol=1e-6)
    # normalised by 2 (|S_p| |S_t|)^(1/8), then log1p and 1 - 1 / (tau + .)
    scale = np.array([2 * (np.linalg.det(p[1]) * np.linalg.det(t[1])) ** 0.125 for p, t in pairs])
    norm = GDLoss("gwd", fun="log1p", tau=1.0).elementwise(pred.double(), target.double())
    np.testing.assert_allclose(norm.numpy(), 1 - 1 / (1 + np.log1p(np.sqrt(w2) / scale)), rtol=1e-7)
    f32 = GDLoss("gwd", fun="log1p", tau=1.0).elementwise(pred, target)
    np.testing.assert_allclose(f32.double().numpy(), norm.numpy(), rtol=1e-3, atol=1e-4)


def test_gdloss_symmetric_kl_variants():
    pred, target = box_pairs(32)
    fwd = np.array(
        [np_kl(np_gaussian(t), np_gaussian(p)) for p, t in zip(pred.double(), target.double(), strict=True)]
    )
    bwd = np.array(
        [np_kl(np_gaussian(p), np_gaussian(t)) for p, t in zip(pred.double(), target.double(), strict=True)]
    )
    p64, t64 = pred.double(), target.double()
    jd = GDLoss("jd", fun="none", tau=0).elementwise(p64, t64)
    np.testing.assert_allclose(jd.numpy(), np.sqrt(0.5 * (fwd + bwd)), rtol=1e-9)
    hi = GDLoss("kld_symmax", fun="none", tau=0).elementwise(p64, t64)
    lo = GDLoss("kld_symmin", fun="none", tau=0, sqrt=False).elementwise(p64, t64)
    np.testing.assert_allclose(hi.numpy(), np.sqrt(np.maximum(fwd, bwd)), rtol=1e-9)
    np.testing.assert_allclose(lo.numpy(), np.minimum(fwd, bwd), rtol=1e-9)


def test_gdloss_v1_formulas():
    pred, target = box_pairs()
    pairs = [(np_gaussian(p), np_gaussian(t)) for p, t in zip(pred.double(), target.double(), strict=True)]
    p64, t64 = pred.double(), target.double()
    # kld: twice KL(N_p || N_t), clamped at 1e-6, then 1 - 1 / (tau + log1p(.))
    two_kl = np.maximum(np.array([2 * np_kl(p, t) for p, t in pairs]), 1e-6)
    ours = GDLossV1("kld", fun="log1p", tau=1.0).elementwise(p64, t64)
    np.testing.assert_allclose(ours.numpy(), 1 - 1 / (1 + np.log1p(two_kl)), rtol=1e-9)
    ours = GDLossV1("kld", fun="sqrt", tau=2.0).elementwise(p64, t64)
    np.testing.assert_allclose(ours.numpy(), 1 - 1 / (2 + np.sqrt(two_kl)), rtol=1e-9)
    # gwd: the squared distance (default fun sqrt: the distance itself inside the bound)
    w2 = np.maximum(np.array([np_w2_squared(p, t) for p, t in pairs]), 1e-6)
    ours = GDLossV1("gwd", fun="sqrt", tau=2.0).elementwise(p64, t64)
    np.testing.assert_allclose(ours.numpy(), 1 - 1 / (2 + np.sqrt(w2)), rtol=1e-7)
    scale = np.array([2 * (np.linalg.det(p[1]) * np.linalg.det(t[1])) ** 0.125 for p, t in pairs])
    ours = GDLossV1("gwd", fun="").elementwise(p64, t64)
    np.testing.assert_allclose(ours.numpy(), np.log1p(np.sqrt(w2) / scale), rtol=1e-7)
    bcd = np.maximum(np.array([np_bhattacharyya(p, t) for p, t in pairs]), 1e-6)
    ours = GDLossV1("bcd", fun="log1p", tau=1.0).elementwise(p64, t64)
    np.testing.assert_allclose(ours.numpy(), 1 - 1 / (1 + np.log1p(bcd)), rtol=1e-9)
    ours = GDLossV1("bcd", fun="", tau=1.0).elementwise(p64, t64)
    np.testing.assert_allclose(ours.numpy(), 1 - 1 / (1 + bcd), rtol=1e-9)


def test_kld_is_scale_invariant_and_gwd_is_not():
    """The KLD paper's property: scaling both boxes (centres and sides) leaves the KLD unchanged."""
    pred, target = box_pairs(16)
    k = torch.tensor([3.0, 3.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    for kind in ("kld", "jd"):
        f = GDLoss(kind, fun="none", tau=0, sqrt=False).elementwise
        torch.testing.assert_close(
            f(pred.double() * k, target.double() * k), f(pred.double(), target.double())
        )
    f = GDLoss("gwd", fun="none", tau=0, normalize=False).elementwise
    torch.testing.assert_close(
        f(pred.double() * k, target.double() * k), 3 * f(pred.double(), target.double())
    )


# ------------------------------------------------------------------------------------- edge cases
def test_identical_boxes_give_the_clamp_floor():
    _, target = box_pairs(16)
    # the stable KLD (no root, log1p, tau 1) of a box with itself is 0 up to float32 rounding
    stable = GDLoss("kld", fun="log1p", tau=1, sqrt=False).elementwise(target, target)
    assert stable.abs().max() < 1e-5
    # with roots, mmrotate clamps at 1e-7 before the root: the floor is sqrt(1e-7)
    floor = math.sqrt(1e-7)
    rooted = GDLoss("kld", fun="none", tau=0).elementwise(target.double(), target.double())
    torch.testing.assert_close(rooted, torch.full_like(rooted, floor))
    gwd = GDLoss("gwd", fun="none", tau=0, normalize=False).elementwise(target.double(), target.double())
    assert gwd.max() < 1e-3 and gwd.min() >= floor - 1e-12
    v1 = GDLossV1("kld", fun="log1p", tau=1.0).elementwise(target.double(), target.double())
    torch.testing.assert_close(v1, 1 - 1 / (1 + torch.log1p(torch.full_like(v1, 1e-6))))


@pytest.mark.parametrize(
    "kind", ["kld", "gwd", "jd", "kld_symmax", "kld_symmin", "v1-kld", "v1-gwd", "v1-bcd"]
)
def test_near_degenerate_sides_stay_finite(kind):
    """In float32 (training) boxes 0.01 px thin, aspect 4000, give finite losses and gradients;
    thinner rotated ones lose the covariance's determinant to cancellation (mmrotate's formula,
    kept). Sides below 1e-7 are clamped to it: a 1e-12 px or 0 px side is a 1e-7 px one."""
    fn = GDLossV1(kind[3:], fun="log1p") if kind.startswith("v1") else GDLoss(kind, fun="log1p", tau=1)
    # bcd takes |S_t S_p| as the determinant of the product, which cancels sooner: 30x thicker
    k = 30.0 if kind == "v1-bcd" else 1.0
    target = torch.tensor([[50.0, 50.0, 40.0, 0.01 * k, 0.3], [50.0, 50.0, 0.02 * k, 30.0, 1.2]])
    pred = torch.tensor(
        [[51.0, 49.0, 38.0, 0.012 * k, 0.35], [50.0, 52.0, 0.5, 28.0, 1.1]], requires_grad=True
    )
    out = fn.elementwise(pred, target)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pred.grad).all()
    # axis-aligned, so that the determinant of the clamped covariance is exact
    thin = torch.tensor(
        [[50.0, 50.0, 40.0, 1e-12, 0.0], [50.0, 50.0, 0.0, 30.0, math.pi / 2]], dtype=torch.float64
    )
    clamped = thin.clone()
    clamped[0, 3], clamped[1, 2] = 1e-7, 1e-7
    p64 = pred.detach().double()
    out = fn.elementwise(p64, thin)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, fn.elementwise(p64, clamped))


# ----------------------------------------------------------------------------- weights, reductions
def test_gdloss_reduction_weights_and_config():
    pred, target = box_pairs(10)
    fn = build_loss(
        {"type": "GDLoss", "loss_type": "kld", "fun": "log1p", "tau": 1, "sqrt": False, "loss_weight": 5.5}
    )
    assert isinstance(fn, GDLoss) and fn.loss_weight == 5.5 and fn.sqrt is False
    el = fn.elementwise(pred, target)
    weight = torch.zeros(10, 5)
    weight[:4] = 1.0
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(fn(pred, target, weight, avg_factor=3.0), 5.5 * el[:4].sum() / (3.0 + eps))
    torch.testing.assert_close(fn(pred, target), 5.5 * el.mean())  # no weight, no avg_factor: mean
    assert GDLoss("kld", reduction="none")(pred, target).shape == (10,)
    # all weights zero: 0 (and a zero gradient), as mmrotate returns
    p = pred.clone().requires_grad_(True)
    zero = fn(p, target, torch.zeros(10, 5), avg_factor=1.0)
    zero.backward()
    assert zero.item() == 0 and p.grad.abs().max() == 0
    with pytest.raises(ValueError, match="avg_factor"):
        GDLoss("kld", reduction="sum")(pred, target, weight, avg_factor=2.0)
    with pytest.raises(ValueError, match="loss_type"):
        build_loss({"type": "GDLoss", "loss_type": "kl"})
    with pytest.raises(ValueError, match="GDLoss_v1.*unexpected keyword"):
        build_loss({"type": "GDLoss_v1", "loss_type": "kld", "sqrt": False})
    # GDLoss_v1 keeps only the positive boxes and returns them unreduced
    v1 = build_loss({"type": "GDLoss_v1", "loss_type": "kld", "fun": "log1p", "tau": 1.0, "loss_weight": 2.0})
    out = v1(pred, target, weight)
    torch.testing.assert_close(out, 2.0 * v1.elementwise(pred[:4], target[:4]))
    assert v1(pred, target, torch.zeros(10, 5)).item() == 0


def test_postprocess_rules():
    d = torch.tensor([0.0, 1e-9, 3.0])
    torch.testing.assert_close(gaussian_postprocess(d, "none", 0.0), d)
    torch.testing.assert_close(gaussian_postprocess(d, "sqrt", 0.5), torch.tensor([1e-7, 1e-7, 3.0]).sqrt())
    torch.testing.assert_close(gaussian_postprocess(d, "log1p", 2.0), 1 - 1 / (2 + torch.log1p(d)))
    with pytest.raises(ValueError, match="fun"):
        gaussian_postprocess(d, "exp")


def _targets(pos_per_level: list[int], level_sizes: list[int], seed: int = 0) -> tuple:
    """Decoded predictions and targets ``[2, N, 5]``, weights with the given positives per level
    (spread over both images), zero targets elsewhere (as the head's targets are)."""
    n = sum(level_sizes)
    pred, target = box_pairs(2 * n, seed)
    pred, target = pred.view(2, n, 5), target.view(2, n, 5).clone()
    pos = torch.zeros(2, n, dtype=torch.bool)
    start = 0
    for k, size in zip(pos_per_level, level_sizes, strict=True):
        pos.view(-1)[start : start + k] = True if k else False  # image 0 first, then image 1
        start += size
    pos = pos.view(2, n)
    target[~pos] = 0.0
    return pred, target, pos


def test_level_losses_match_mmrotate_per_level_calls():
    sizes = [6, 4, 3]
    pred, target, pos = _targets([3, 0, 2], sizes)
    weights = pos[..., None].float().expand(-1, -1, 5)
    avg = torch.tensor(5.0)
    fn = GDLoss("kld", fun="log1p", tau=1, sqrt=False, loss_weight=5.5)
    levels = fn.level_losses(pred, target, weights, sizes, avg)
    v1 = GDLossV1("kld", fun="log1p", tau=1.0)
    levels_v1 = v1.level_losses(pred, target, weights, sizes, avg)
    for i, (p, t, w) in enumerate(
        zip(pred.split(sizes, 1), target.split(sizes, 1), weights.split(sizes, 1), strict=True)
    ):
        flat = (p.reshape(-1, 5), t.reshape(-1, 5), w.reshape(-1, 5))
        torch.testing.assert_close(levels[i], fn(*flat, avg_factor=avg))  # mmrotate's loss_single
        torch.testing.assert_close(levels_v1[i], v1(*flat).mean())  # then _parse_losses' mean
    assert levels[1] == 0 and levels_v1[1] == 0
    # zero targets of non-positives never reach the loss or its gradient
    p = pred.clone().requires_grad_(True)
    (
        fn.level_losses(p, target, weights, sizes, avg).sum()
        + v1.level_losses(p, target, weights, sizes, avg).sum()
    ).backward()
    assert torch.isfinite(p.grad).all() and p.grad[~pos].abs().max() == 0


def test_dense_head_loss_decoded_path():
    """With a decoder the box loss sees decoded boxes and the ground truths: zero deltas decode to
    the anchors, so the loss is GDLoss(anchor, gt) over the positives."""
    from rotdet.models.coders import DeltaXYWHAOBBoxCoder

    coder = DeltaXYWHAOBBoxCoder(angle_range="le90", edge_swap=True, proj_xy=True)
    anchors = torch.tensor([[[16.0, 16.0, 32.0, 16.0, 0.0], [48.0, 16.0, 32.0, 32.0, 0.0]]])  # [1, 2, 5]
    gt = torch.tensor([[20.0, 14.0, 30.0, 12.0, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0]])
    targets = AnchorTargets(
        labels=torch.tensor([[0, 1]]),
        label_weights=torch.ones(1, 2),
        bbox_targets=gt[None],
        bbox_weights=torch.tensor([[[1.0] * 5, [0.0] * 5]]),
        num_total_pos=torch.tensor(1),
        level_sizes=[2],
        anchors=anchors,
    )
    cls = [torch.zeros(1, 2, 1, 2)]  # one anchor per location, 2 classes, 1 x 2 grid
    deltas = [torch.zeros(1, 5, 1, 2)]
    fn = GDLoss("kld", fun="log1p", tau=1, sqrt=False, loss_weight=5.5)
    out = dense_head_loss(cls, deltas, targets, LossSpec("FocalLoss"), fn, coder.decode)
    expected = 5.5 * fn.elementwise(coder.decode(anchors, torch.zeros(1, 2, 5))[0, :1], gt[:1])[0]
    torch.testing.assert_close(out["loss_bbox"], expected[None] / (1 + torch.finfo(torch.float32).eps))
    with pytest.raises(ValueError, match="anchors"):
        no_anchors = AnchorTargets(
            *[getattr(targets, f) for f in ("labels", "label_weights", "bbox_targets")],
            targets.bbox_weights,
            targets.num_total_pos,
            [2],
        )
        dense_head_loss(cls, deltas, no_anchors, LossSpec("FocalLoss"), fn, coder.decode)
