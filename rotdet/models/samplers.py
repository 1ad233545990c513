"""mmdet 2.28's ``RandomSampler`` (Oriented R-CNN's RPN, horizontal boxes) and mmrotate 0.3.4's
``RRandomSampler`` (its RoI head, rotated boxes): a random subset of positives and negatives.

The rule, from an assignment's ``gt_inds`` (0 negative, ``k + 1`` positive for gt ``k``, -1 ignored):

1. with ``add_gt_as_proposals`` (and ground truths present) the gts are put *before* the candidates
   and count as positives of themselves;
2. ``int(num * pos_fraction)`` positives are wanted; with more, that many are drawn at random;
3. ``num - (positives taken)`` negatives are wanted, at most ``int(neg_pos_ub * max(1, positives))``
   when ``neg_pos_ub >= 0``; with more, that many are drawn at random;
4. both index sets come back sorted (mmdet's ``unique``).

A draw of ``k`` out of ``n`` candidates is ``candidates[randperm(n)[:k]]``, positives first, then
negatives, as mmdet. The random source is injectable, so that a loss comparison can reproduce
mmrotate's draw exactly:

* ``generator``: a ``torch.Generator``. mmdet's ``RandomSampler`` calls ``torch.randperm(n)`` on the
  CPU's default generator, so ``torch.manual_seed(s)`` right before mmdet's ``sample`` and
  ``generator=torch.Generator().manual_seed(s)`` here give the same indices (given the same
  assignment); mmrotate's ``RRandomSampler`` draws on the candidates' device, which is the CPU in the
  reference build. Several images in a row keep drawing from the same generator, as mmdet from the
  global one.
* ``permutation``: a callable ``(n, device) -> [n] int64`` used instead of ``randperm`` (e.g. replaying
  permutations recorded from mmrotate), which takes precedence over ``generator``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from rotdet.models.assigners import AssignResult
from rotdet.models.config_keys import constructor_kwargs

__all__ = ["RRandomSampler", "RandomSampler", "SamplingResult", "sampler_from_config"]

Permutation = Callable[[int, torch.device], Tensor]


@dataclass
class SamplingResult:
    """Sampled candidates of one image (mmdet's ``SamplingResult``).

    Attributes:
        pos_inds, neg_inds: ``[P]`` / ``[Q]`` int64 sorted indices into ``bboxes`` of the sampler's
            call with the gts prepended (when ``add_gt_as_proposals``).
        pos_bboxes, neg_bboxes: ``[P, D]`` / ``[Q, D]`` their boxes (``D`` 4, or 5 for rotated).
        pos_is_gt: ``[P]`` uint8, 1 where the positive is a prepended gt.
        num_gts: number of ground truths.
        pos_assigned_gt_inds: ``[P]`` int64 gt index of each positive.
        pos_gt_bboxes: ``[P, G]`` the assigned gt boxes (``[0, G]`` without gts).
        pos_gt_labels: ``[P]`` int64 their labels, or None when the assignment has no labels.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    pos_bboxes: Tensor
    neg_bboxes: Tensor
    pos_is_gt: Tensor
    num_gts: int
    pos_assigned_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor | None

    @property
    def bboxes(self) -> Tensor:
        """``[P + Q, D]`` positives then negatives."""
        return torch.cat([self.pos_bboxes, self.neg_bboxes])


class RandomSampler:
    """mmdet's ``RandomSampler`` on horizontal boxes ``[N, >=4]`` (only the first 4 columns are kept).

    Args:
        num: samples wanted per image.
        pos_fraction: fraction of them that may be positive.
        neg_pos_ub: if ``>= 0``, at most this many negatives per positive (at least one positive assumed).
        add_gt_as_proposals: prepend the gts to the candidates (needs ``gt_labels``).
        generator: random source of the draws (None: the default CPU generator, as mmdet).
        permutation: replaces ``randperm`` (see the module docstring).
    """

    BOX_DIM = 4
    CONFIG_TYPES = frozenset({"RandomSampler"})

    def __init__(
        self,
        num: int,
        pos_fraction: float,
        neg_pos_ub: float = -1,
        add_gt_as_proposals: bool = True,
        generator: torch.Generator | None = None,
        permutation: Permutation | None = None,
    ) -> None:
        if num < 0 or not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"need num >= 0 and pos_fraction in [0, 1], got {num}, {pos_fraction}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = bool(add_gt_as_proposals)
        self.generator = generator
        self.permutation = permutation

    @classmethod
    def from_config(cls, cfg: Mapping, generator: torch.Generator | None = None) -> RandomSampler:
        """From a ``train_cfg``'s ``sampler`` (its type must be this class's)."""
        c = constructor_kwargs(cls, cfg, "sampler", cls.CONFIG_TYPES, exclude={"generator", "permutation"})
        return cls(**c, generator=generator)

    def _draw_device(self, candidates: Tensor) -> torch.device:
        """mmdet draws on the CPU and moves the permutation to the candidates."""
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _permute(self, n: int, candidates: Tensor) -> Tensor:
        if self.permutation is not None:
            perm = self.permutation(n, candidates.device)
            if perm.shape != (n,):
                raise ValueError(f"permutation({n}) returned shape {tuple(perm.shape)}")
        else:
            perm = torch.randperm(n, generator=self.generator, device=self._draw_device(candidates))
        return perm.to(candidates.device)

    def _choose(self, candidates: Tensor, num_expected: int) -> Tensor:
        """All ``candidates`` ``[n]`` if at most ``num_expected``, else a random ``num_expected`` of them."""
        if candidates.numel() <= num_expected:
            return candidates
        return candidates[self._permute(candidates.numel(), candidates)[:num_expected]]

    def sample(
        self,
        assign_result: AssignResult,
        bboxes: Tensor,
        gt_bboxes: Tensor,
        gt_labels: Tensor | None = None,
    ) -> SamplingResult:
        """Sample from candidates ``bboxes`` ``[N, >=D]`` assigned to ``gt_bboxes`` ``[M, G]``.

        ``assign_result`` is not changed (mmdet extends it in place with the gts; the extended
        assignment is what the result describes).
        """
        if bboxes.dim() < 2:
            bboxes = bboxes[None, :]
        bboxes = bboxes[:, : self.BOX_DIM]
        gt_inds, labels = assign_result.gt_inds, assign_result.labels
        if gt_inds.numel() != bboxes.shape[0]:
            raise ValueError(f"assignment of {gt_inds.numel()} candidates for {bboxes.shape[0]} boxes")
        gt_flags = torch.zeros(bboxes.shape[0], dtype=torch.uint8, device=bboxes.device)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            if gt_labels is None:
                raise ValueError("gt_labels must be given when add_gt_as_proposals is True")
            num_gts = len(gt_labels)
            bboxes = torch.cat([gt_bboxes, bboxes], dim=0)
            gt_inds = torch.cat(
                [torch.arange(1, num_gts + 1, dtype=torch.long, device=gt_inds.device), gt_inds]
            )
            if labels is not None:
                labels = torch.cat([gt_labels.to(labels), labels])
            gt_flags = torch.cat([torch.ones(num_gts, dtype=torch.uint8, device=bboxes.device), gt_flags])

        pos_inds = self._choose(
            torch.nonzero(gt_inds > 0).flatten(), int(self.num * self.pos_fraction)
        ).unique()
        num_expected_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            num_expected_neg = min(num_expected_neg, int(self.neg_pos_ub * max(1, pos_inds.numel())))
        neg_inds = self._choose(torch.nonzero(gt_inds == 0).flatten(), num_expected_neg).unique()

        pos_assigned = gt_inds[pos_inds] - 1
        if gt_bboxes.numel() == 0:
            pos_gt_bboxes = gt_bboxes.new_zeros(
                0, gt_bboxes.shape[-1] if gt_bboxes.dim() > 1 else self.BOX_DIM
            )
        else:
            pos_gt_bboxes = gt_bboxes[pos_assigned]
        return SamplingResult(
            pos_inds=pos_inds,
            neg_inds=neg_inds,
            pos_bboxes=bboxes[pos_inds],
            neg_bboxes=bboxes[neg_inds],
            pos_is_gt=gt_flags[pos_inds],
            num_gts=int(gt_bboxes.shape[0]),
            pos_assigned_gt_inds=pos_assigned,
            pos_gt_bboxes=pos_gt_bboxes,
            pos_gt_labels=None if labels is None else labels[pos_inds],
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num={self.num}, pos_fraction={self.pos_fraction}, "
            f"neg_pos_ub={self.neg_pos_ub}, add_gt_as_proposals={self.add_gt_as_proposals})"
        )


class RRandomSampler(RandomSampler):
    """mmrotate's ``RRandomSampler``: :class:`RandomSampler` on rotated boxes ``[N, >=5]`` (the first 5
    columns kept, e.g. proposals with a score column); it draws on the candidates' device."""

    BOX_DIM = 5
    CONFIG_TYPES = frozenset({"RRandomSampler"})

    def _draw_device(self, candidates: Tensor) -> torch.device:
        return self.generator.device if self.generator is not None else candidates.device


def sampler_from_config(cfg: Mapping, generator: torch.Generator | None = None) -> RandomSampler:
    """A ``RandomSampler`` or ``RRandomSampler`` by the section's ``type``."""
    kind = cfg.get("type")
    for cls in (RandomSampler, RRandomSampler):
        if kind in cls.CONFIG_TYPES:
            return cls.from_config(cfg, generator)
    raise ValueError(f"sampler: type {kind!r} is not supported; expected 'RandomSampler' or 'RRandomSampler'")
