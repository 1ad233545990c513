"""Gaussian-distribution box losses: mmrotate 0.3.4's ``GDLoss`` and ``GDLoss_v1``.

A rotated box ``(cx, cy, w, h, theta)`` is read as the 2-D Gaussian with mean ``(cx, cy)`` and
covariance ``R(theta) diag(w^2 / 4, h^2 / 4) R(theta)^T`` (:func:`xy_wh_r_to_xy_sigma`; ``w, h`` are
first clamped to ``[1e-7, 1e7]``). A loss compares the Gaussians of the decoded predictions and of
their ground truths, so it is computed on *decoded* boxes (a head with ``reg_decoded_bbox``).

:class:`GDLoss` (``mmrotate/models/losses/gaussian_dist_loss.py``), distances between the
prediction ``p`` and the target ``t``:

* ``kld`` -- ``KL(N_t || N_p) = 0.5 d^T S_p^-1 d / alpha^2 + 0.5 tr(S_p^-1 S_t)
  + 0.5 ln(|S_p| / |S_t|) - 1``, then ``sqrt(max(., 1e-7))`` when ``sqrt`` (the default);
* ``gwd`` -- the 2-Wasserstein distance: ``sqrt(max(|d|^2 + alpha^2 (tr S_p + tr S_t
  - 2 sqrt(max(tr(S_p S_t) + 2 sqrt(max(|S_p||S_t|, 1e-7)), 1e-7))), 1e-7))``, divided when
  ``normalize`` (the default) by ``2 (|S_p||S_t|)^(1/8)`` (each root's argument clamped at 1e-7);
* ``jd`` -- the mean of the two KL directions (without their roots), rooted when ``sqrt``;
* ``kld_symmax`` / ``kld_symmin`` -- the larger / smaller of the two directions (each rooted when
  ``sqrt``);

then ``fun`` (``log1p``, ``sqrt`` of ``max(., 1e-7)``, or ``none``) and, for ``tau >= 1``, the
bounded form ``1 - 1 / (tau + f)``. The per-box losses are weighted and reduced as mmdet's
``weight_reduce_loss`` (a dense head: ``sum / (num_total_pos + eps)``), times ``loss_weight``.
The ``*_kld_stable_*`` configs use ``kld`` with ``sqrt=False, fun=log1p, tau=1``.

:class:`GDLossV1` (``GDLoss_v1``, which R3Det's KLD config uses) is another module with other
formulas: ``kld`` is ``2 KL(N_p || N_t)`` (``d^T S_t^-1 d + tr(S_t^-1 S_p) + ln(|S_t| / |S_p|) - 2``,
``S_t^-1`` by matrix inverse), ``gwd`` the squared Wasserstein distance, ``bcd`` the Bhattacharyya
distance, each clamped at 1e-6, then ``1 - 1 / (tau + sqrt(.) or log1p(.))``. It takes only the
boxes of positive weight and ignores ``reduction`` and ``avg_factor``: mmrotate's head then holds one
loss per positive box and mmdet's ``_parse_losses`` takes their mean, so a dense head's level loss
is the **mean over that level's positives** (0 when it has none), times ``loss_weight``.

:class:`KFLoss` (``kf_iou_loss.py``, the KFIoU loss) is the third: a smooth-L1 (``beta = 1/9``) of
the predicted centre *deltas* against the target deltas, summed over ``x, y``, plus a function of
the Kalman-filter IoU of the two Gaussians: with ``V(S) = 4 sqrt(|S|)`` and the fused covariance
``S = S_p - K S_p``, ``K = S_p (S_p + S_t)^-1``, ``KFIoU = V(S) / (V(S_p) + V(S_t) - V(S) + 1e-6)``
(``V(S)`` is 0 where its root is not a number); ``fun`` ``none``: ``1 - KFIoU``, ``ln``:
``-ln(KFIoU + 1e-6)``, ``exp``: ``exp(1 - KFIoU) - 1``; the sum clamped at 0. Its head (mmrotate's
``KFIoU*`` heads) regresses deltas, as without it, and decodes both the predicted and the *target
deltas* on the anchors for the Gaussians. Weighted and reduced as ``GDLoss``.

Determinants and inverses are ``torch.det`` / ``torch.inverse`` and the products ``bmm``, as in
mmrotate, so values agree to float32 rounding. Computed in float32, also under autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rotdet.models.loss_reduction import EPS, weight_reduce_loss

__all__ = [
    "GDLoss",
    "GDLossV1",
    "KFLoss",
    "bcd_v1",
    "gaussian_postprocess",
    "gd_distance",
    "gwd_v1",
    "kld_v1",
    "xy_stddev_pearson_to_xy_sigma",
    "xy_wh_r_to_xy_sigma",
]

Gaussian = tuple[Tensor, Tensor]  # mean [..., 2], covariance [..., 2, 2]


def xy_wh_r_to_xy_sigma(boxes: Tensor) -> Gaussian:
    """Rotated boxes ``[..., 5]`` -> means ``[..., 2]`` and covariances ``[..., 2, 2]``
    (mmrotate's ``xy_wh_r_2_xy_sigma``)."""
    if boxes.shape[-1] != 5:
        raise ValueError(f"rotated boxes must be [..., 5], got {tuple(boxes.shape)}")
    lead = boxes.shape[:-1]
    half_sides = 0.5 * boxes[..., 2:4].clamp(min=1e-7, max=1e7).reshape(-1, 2)
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    rot = torch.stack((cos, -sin, sin, cos), dim=-1).reshape(-1, 2, 2)
    sigma = rot.bmm(torch.diag_embed(half_sides).square()).bmm(rot.transpose(1, 2))
    return boxes[..., :2], sigma.reshape(*lead, 2, 2)


def xy_stddev_pearson_to_xy_sigma(params: Tensor) -> Gaussian:
    """``(x, y, sigma_x, sigma_y, rho)`` ``[..., 5]`` -> means and covariances (mmrotate's
    ``xy_stddev_pearson_2_xy_sigma``; ``rho`` clamped to ``+-(1 - 1e-7)``)."""
    stddev = params[..., 2:4]
    pearson = params[..., 4].clamp(min=1e-7 - 1, max=1 - 1e-7)
    covar = pearson * stddev.prod(dim=-1)
    var = stddev.square()
    sigma = torch.stack((var[..., 0], covar, covar, var[..., 1]), dim=-1)
    return params[..., :2], sigma.reshape(*params.shape[:-1], 2, 2)


def gaussian_postprocess(distance: Tensor, fun: str = "log1p", tau: float = 1.0) -> Tensor:
    """``fun`` of a distance, then ``1 - 1 / (tau + .)`` when ``tau >= 1`` (else as is)."""
    if fun == "log1p":
        distance = torch.log1p(distance)
    elif fun == "sqrt":
        distance = torch.sqrt(distance.clamp(min=1e-7))
    elif fun != "none":
        raise ValueError(f"fun must be log1p, sqrt or none, got {fun!r}")
    return 1 - 1 / (tau + distance) if tau >= 1.0 else distance


def _flat(g: Gaussian) -> Gaussian:
    return g[0].reshape(-1, 2), g[1].reshape(-1, 2, 2)


def _trace(m: Tensor) -> Tensor:
    return m.diagonal(dim1=-2, dim2=-1).sum(dim=-1)


def _kld(pred: Gaussian, target: Gaussian, alpha: float, sqrt: bool) -> Tensor:
    """``KL(N_t || N_p)`` per box ``[M]`` (flat inputs), rooted when ``sqrt``."""
    (mu_p, sig_p), (mu_t, sig_t) = pred, target
    det_p = sig_p.det()
    # the inverse of a 2x2 matrix: its adjugate over its determinant
    adj_p = torch.stack((sig_p[:, 1, 1], -sig_p[:, 0, 1], -sig_p[:, 1, 0], sig_p[:, 0, 0]), dim=-1)
    inv_p = adj_p.reshape(-1, 2, 2) / det_p[:, None, None]
    d = (mu_p - mu_t).unsqueeze(-1)
    centre = 0.5 * d.transpose(1, 2).bmm(inv_p).bmm(d).view(-1)
    shape = 0.5 * _trace(inv_p.bmm(sig_t)) + 0.5 * (det_p.log() - sig_t.det().log()) - 1
    distance = centre / (alpha * alpha) + shape
    return distance.clamp(min=1e-7).sqrt() if sqrt else distance


def _gwd(pred: Gaussian, target: Gaussian, alpha: float, normalize: bool) -> Tensor:
    """The Wasserstein distance per box ``[M]`` (flat inputs), normalised when ``normalize``."""
    (mu_p, sig_p), (mu_t, sig_t) = pred, target
    centre = (mu_p - mu_t).square().sum(dim=-1)
    det_sqrt = (sig_p.det() * sig_t.det()).clamp(min=1e-7).sqrt()
    coupling = (_trace(sig_p.bmm(sig_t)) + 2 * det_sqrt).clamp(min=1e-7).sqrt()
    shape = _trace(sig_p) + _trace(sig_t) + (-2) * coupling
    distance = (centre + alpha * alpha * shape).clamp(min=1e-7).sqrt()
    if normalize:
        scale = 2 * det_sqrt.clamp(min=1e-7).sqrt().clamp(min=1e-7).sqrt().clamp(min=1e-7)
        distance = distance / scale
    return distance


def gd_distance(
    pred: Gaussian,
    target: Gaussian,
    loss_type: str,
    alpha: float = 1.0,
    sqrt: bool = True,
    normalize: bool = True,
) -> Tensor:
    """:class:`GDLoss`'s distance of ``loss_type`` per box, shaped like the means' leading dims.

    ``sqrt`` applies to the KL types, ``normalize`` to ``gwd`` (mmrotate's defaults: both True)."""
    lead = pred[0].shape[:-1]
    p, t = _flat(pred), _flat(target)
    if loss_type == "kld":
        out = _kld(p, t, alpha, sqrt)
    elif loss_type == "gwd":
        out = _gwd(p, t, alpha, normalize)
    elif loss_type == "jd":
        out = 0.5 * (_kld(p, t, alpha, False) + _kld(t, p, alpha, False))
        out = out.clamp(min=1e-7).sqrt() if sqrt else out
    elif loss_type in ("kld_symmax", "kld_symmin"):
        both = _kld(p, t, alpha, sqrt), _kld(t, p, alpha, sqrt)
        out = torch.max(*both) if loss_type == "kld_symmax" else torch.min(*both)
    else:
        raise ValueError(f"GDLoss loss_type must be one of {', '.join(GD_LOSS_TYPES)}; got {loss_type!r}")
    return out.reshape(lead)


GD_LOSS_TYPES = ("kld", "gwd", "jd", "kld_symmax", "kld_symmin")
_REPRESENTATIONS: dict[str, Callable[[Tensor], Gaussian]] = {
    "xy_wh_r": xy_wh_r_to_xy_sigma,
    "xy_stddev_pearson": xy_stddev_pearson_to_xy_sigma,
}


def _bounded(distance: Tensor, fun: str, tau: float) -> Tensor:
    """``GDLoss_v1``'s ``1 - 1 / (tau + sqrt(d) or log1p(d))``."""
    return 1 - 1 / (tau + (torch.sqrt(distance) if fun == "sqrt" else torch.log1p(distance)))


def kld_v1(pred: Gaussian, target: Gaussian, fun: str = "log1p", tau: float = 1.0) -> Tensor:
    """``GDLoss_v1`` ``kld`` per box ``[M]`` (``2 KL(N_p || N_t)`` clamped at 1e-6, bounded)."""
    (mu_p, sig_p), (mu_t, sig_t) = _flat(pred), _flat(target)
    d = (mu_p - mu_t).unsqueeze(-1)
    inv_t = torch.inverse(sig_t)
    centre = d.transpose(-1, -2).matmul(inv_t).matmul(d).reshape(-1)
    shape = _trace(inv_t.matmul(sig_p)) + torch.log(torch.det(sig_t) / torch.det(sig_p))
    return _bounded((centre + shape - 2).clamp(min=1e-6), fun, tau)


def gwd_v1(pred: Gaussian, target: Gaussian, fun: str = "sqrt", tau: float = 2.0) -> Tensor:
    """``GDLoss_v1`` ``gwd`` per box ``[M]``: the squared Wasserstein distance clamped at 1e-6,
    bounded; ``fun=''``: ``log1p(sqrt(d) / (2 (|S_p||S_t|)^(1/8)))``."""
    (mu_p, sig_p), (mu_t, sig_t) = _flat(pred), _flat(target)
    centre = (mu_p - mu_t).square().sum(dim=-1)
    det_sqrt = (sig_p.det() * sig_t.det()).clamp(min=0).sqrt()
    shape = (
        _trace(sig_p) + _trace(sig_t) + (-2) * (_trace(sig_p.bmm(sig_t)) + 2 * det_sqrt).clamp(min=0).sqrt()
    )
    distance = (centre + shape).clamp(min=1e-6)
    if fun in ("sqrt", "log1p"):
        return _bounded(distance, fun, tau)
    scale = 2 * det_sqrt.sqrt().sqrt().clamp(min=1e-7)
    return torch.log1p(torch.sqrt(distance) / scale)


def bcd_v1(pred: Gaussian, target: Gaussian, fun: str = "log1p", tau: float = 1.0) -> Tensor:
    """``GDLoss_v1`` ``bcd`` per box ``[M]``: the Bhattacharyya distance clamped at 1e-6, bounded
    (``fun=''``: ``1 - 1 / (tau + d)``)."""
    (mu_p, sig_p), (mu_t, sig_t) = _flat(pred), _flat(target)
    d = (mu_p - mu_t).unsqueeze(-1)
    mean_sig = 0.5 * (sig_p + sig_t)
    log_term = torch.log(torch.det(mean_sig) / torch.sqrt(torch.det(sig_t.matmul(sig_p))))
    centre = d.transpose(-1, -2).matmul(torch.inverse(mean_sig)).matmul(d).reshape(-1)
    distance = (0.5 * log_term + 0.125 * centre).clamp(min=1e-6)
    if fun in ("sqrt", "log1p"):
        return _bounded(distance, fun, tau)
    return 1 - 1 / (tau + distance)


_V1_LOSSES = {"kld": kld_v1, "gwd": gwd_v1, "bcd": bcd_v1}


def _positive(weights: Tensor) -> Tensor:
    """mmrotate's per-box weight: ``[..., 5]`` box weights averaged over the last dim."""
    return weights.mean(dim=-1) if weights.dim() > 1 else weights


def _safe_targets(pred: Tensor, target: Tensor, positive: Tensor) -> Tensor:
    """The targets, with the prediction itself (detached) wherever a box has no weight.

    A dense head's non-positive anchors carry all-zero targets; mmrotate evaluates the loss on them
    too and multiplies by 0 (or drops them). Their value never reaches the loss, but a degenerate
    zero box could make it non-finite, and ``0 * inf`` would then poison the sum and the gradient."""
    return torch.where(positive[..., None], target, pred.detach())


@dataclass(frozen=True)
class GDLoss:
    """mmrotate 0.3.4's ``GDLoss`` (its defaults: ``fun='log1p'``, ``tau=0``, ``alpha=1``,
    ``reduction='mean'``; ``sqrt`` / ``normalize`` default True, as its loss functions do)."""

    loss_type: str
    representation: str = "xy_wh_r"
    fun: str = "log1p"
    tau: float = 0.0
    alpha: float = 1.0
    reduction: str = "mean"
    loss_weight: float = 1.0
    sqrt: bool = True
    normalize: bool = True

    type = "GDLoss"  # the config name (a class attribute, not a field)

    def __post_init__(self) -> None:
        if self.loss_type not in GD_LOSS_TYPES:
            raise ValueError(
                f"GDLoss loss_type must be one of {', '.join(GD_LOSS_TYPES)}; got {self.loss_type!r}"
            )
        if self.representation not in _REPRESENTATIONS:
            raise ValueError(
                f"GDLoss representation must be xy_wh_r or xy_stddev_pearson; got {self.representation!r}"
            )
        if self.fun not in ("log1p", "sqrt", "none"):
            raise ValueError(f"GDLoss fun must be log1p, sqrt or none; got {self.fun!r}")
        if self.reduction not in ("mean", "sum", "none"):
            raise ValueError(f"GDLoss reduction must be mean, sum or none; got {self.reduction!r}")

    @classmethod
    def from_cfg(cls, cfg: dict) -> GDLoss:
        """From a config dict (``type: GDLoss`` and the keyword arguments above)."""
        c = dict(cfg)
        c.pop("type", None)
        return cls(**c)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Unweighted per-box loss ``[...]`` of decoded ``pred`` and ``target`` boxes ``[..., 5]``."""
        prep = _REPRESENTATIONS[self.representation]
        distance = gd_distance(
            prep(pred), prep(target), self.loss_type, self.alpha, self.sqrt, self.normalize
        )
        return gaussian_postprocess(distance, self.fun, self.tau)

    def __call__(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """mmrotate's ``GDLoss.forward``: ``pred``, ``target`` ``[N, 5]``, ``weight`` ``[N]`` or ``[N, 5]``
        (averaged over the last dim), mmdet's reduction with ``avg_factor``, times ``loss_weight``;
        all weights zero (and a reducing loss): ``0``."""
        if weight is not None:
            if self.reduction != "none" and not bool((weight > 0).any()):
                return (pred * weight).sum()
            weight = _positive(weight)
            target = _safe_targets(pred, target, weight > 0)
        return (
            weight_reduce_loss(self.elementwise(pred, target), weight, self.reduction, avg_factor)
            * self.loss_weight
        )

    def level_losses(
        self, pred: Tensor, target: Tensor, weights: Tensor, level_sizes: list[int], avg_factor: Tensor
    ) -> Tensor:
        """A dense head's ``[L]`` level losses: ``pred``, ``target`` ``[B, N, 5]`` decoded boxes,
        ``weights`` ``[B, N, 5]``; each level's weighted sum over ``avg_factor + eps``."""
        if self.reduction != "mean":
            raise ValueError(
                f"GDLoss reduction={self.reduction!r} in a dense head: mmdet accepts only 'mean' with "
                "the head's avg_factor"
            )
        weight = _positive(weights)
        loss = self.elementwise(pred, _safe_targets(pred, target, weight > 0)) * weight
        sums = torch.stack([x.sum() for x in loss.split(level_sizes, dim=1)])
        return self.loss_weight * (sums / (avg_factor + EPS))


@dataclass(frozen=True)
class GDLossV1:
    """mmrotate 0.3.4's ``GDLoss_v1`` (defaults ``fun='sqrt'``, ``tau=1``); see the module docstring."""

    loss_type: str
    fun: str = "sqrt"
    tau: float = 1.0
    reduction: str = "mean"  # accepted and ignored, as mmrotate does
    loss_weight: float = 1.0

    type = "GDLoss_v1"

    def __post_init__(self) -> None:
        if self.loss_type not in _V1_LOSSES:
            raise ValueError(f"GDLoss_v1 loss_type must be kld, gwd or bcd; got {self.loss_type!r}")
        if self.fun not in ("log1p", "sqrt", ""):
            raise ValueError(f"GDLoss_v1 fun must be log1p, sqrt or ''; got {self.fun!r}")
        if self.reduction not in ("mean", "sum", "none"):
            raise ValueError(f"GDLoss_v1 reduction must be mean, sum or none; got {self.reduction!r}")

    @classmethod
    def from_cfg(cls, cfg: dict) -> GDLossV1:
        """From a config dict (``type: GDLoss_v1`` and the keyword arguments above)."""
        c = dict(cfg)
        c.pop("type", None)
        return cls(**c)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-box loss ``[...]`` of decoded ``pred`` and ``target`` boxes ``[..., 5]`` (no weight)."""
        lead = pred.shape[:-1]
        loss = _V1_LOSSES[self.loss_type](
            xy_wh_r_to_xy_sigma(pred), xy_wh_r_to_xy_sigma(target), self.fun, self.tau
        )
        return loss.reshape(lead)

    def __call__(self, pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
        """mmrotate's ``GDLoss_v1.forward``: the loss ``[P]`` of the ``P`` boxes of positive weight
        (``weight`` ``[N]`` or ``[N, 5]``) times ``loss_weight``, unreduced; none: ``0``."""
        if not bool((weight > 0).any()):
            return (pred * weight).sum()
        keep = _positive(weight) > 0
        return self.elementwise(pred[keep], target[keep]) * self.loss_weight

    def level_losses(
        self, pred: Tensor, target: Tensor, weights: Tensor, level_sizes: list[int], avg_factor: Tensor
    ) -> Tensor:
        """A dense head's ``[L]`` level losses: each level's mean over its positive boxes (what
        mmdet's ``_parse_losses`` makes of the unreduced loss), 0 without positives; ``avg_factor``
        is unused, as in mmrotate."""
        positive = _positive(weights) > 0
        loss = self.elementwise(pred, _safe_targets(pred, target, positive))
        loss = torch.where(positive, loss, torch.zeros_like(loss))
        sums = torch.stack([x.sum() for x in loss.split(level_sizes, dim=1)])
        counts = torch.stack([m.sum() for m in positive.split(level_sizes, dim=1)])
        return self.loss_weight * sums / counts.clamp(min=1).to(sums.dtype)


KF_FUNS = ("none", "ln", "exp")
_KF_BETA = 1.0 / 9.0  # kfiou_loss's defaults; KFLoss's constructor cannot change them
_KF_EPS = 1e-6


@dataclass(frozen=True)
class KFLoss:
    """mmrotate 0.3.4's ``KFLoss`` (defaults ``fun='none'``, ``reduction='mean'``); see the module
    docstring. ``needs_decoded_pair``: a dense head gives it the deltas and the boxes decoded from
    both the predicted and the target deltas (:func:`rotdet.models.losses.dense_head_loss`)."""

    fun: str = "none"
    reduction: str = "mean"
    loss_weight: float = 1.0

    type = "KFLoss"
    needs_decoded_pair = True

    def __post_init__(self) -> None:
        if self.fun not in KF_FUNS:
            raise ValueError(f"KFLoss fun must be one of {', '.join(KF_FUNS)}; got {self.fun!r}")
        if self.reduction != "mean":
            raise ValueError(
                f"KFLoss reduction={self.reduction!r} in a dense head: mmdet accepts only 'mean' with "
                "the head's avg_factor"
            )

    @classmethod
    def from_cfg(cls, cfg: dict) -> KFLoss:
        """From a config dict (``type: KFLoss`` and the keyword arguments above)."""
        c = dict(cfg)
        c.pop("type", None)
        return cls(**c)

    def elementwise(self, pred: Tensor, target: Tensor, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Unweighted per-box loss ``[...]``: ``pred`` / ``target`` deltas ``[..., 5]`` and the boxes
        decoded from them, ``[..., 5]``."""
        lead = pred.shape[:-1]
        diff = (pred[..., :2] - target[..., :2]).abs()
        xy = torch.where(diff < _KF_BETA, 0.5 * diff * diff / _KF_BETA, diff - 0.5 * _KF_BETA).sum(dim=-1)
        sigma_p = xy_wh_r_to_xy_sigma(pred_boxes)[1].reshape(-1, 2, 2)
        sigma_t = xy_wh_r_to_xy_sigma(target_boxes)[1].reshape(-1, 2, 2)
        vol_p = 4 * sigma_p.det().sqrt()
        vol_t = 4 * sigma_t.det().sqrt()
        gain = sigma_p.bmm((sigma_p + sigma_t).inverse())
        fused = sigma_p - gain.bmm(sigma_p)
        vol = 4 * fused.det().sqrt()
        vol = torch.where(torch.isnan(vol), torch.zeros_like(vol), vol)
        kfiou = vol / (vol_p + vol_t - vol + _KF_EPS)
        if self.fun == "ln":
            kf = -torch.log(kfiou + _KF_EPS)
        elif self.fun == "exp":
            kf = torch.exp(1 - kfiou) - 1
        else:
            kf = 1 - kfiou
        return (xy + kf.reshape(lead)).clamp(min=0)

    def level_losses(
        self,
        pred: Tensor,
        target: Tensor,
        weights: Tensor,
        level_sizes: list[int],
        avg_factor: Tensor,
        decoded: tuple[Tensor, Tensor],
    ) -> Tensor:
        """A dense head's ``[L]`` level losses: ``pred``, ``target`` ``[B, N, 5]`` deltas,
        ``decoded`` the boxes decoded from each on the anchors, ``weights`` ``[B, N, 5]``; each
        level's weighted sum over ``avg_factor + eps``. Boxes of no weight count 0 even where their
        loss is not finite (mmrotate would multiply it by 0)."""
        weight = _positive(weights)
        loss = self.elementwise(pred, target, *decoded)
        loss = torch.where(weight > 0, loss * weight, torch.zeros_like(loss))
        sums = torch.stack([x.sum() for x in loss.split(level_sizes, dim=1)])
        return self.loss_weight * (sums / (avg_factor + EPS))
