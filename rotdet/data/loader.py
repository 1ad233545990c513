"""Training loaders with data order and augmentation that are reproducible.

The sample order of epoch ``e`` is a permutation drawn from ``seed + e``, sharded over ranks as
``DistributedSampler`` does (padded to a multiple of the world size, rank ``r`` takes every
``world``-th index from ``r``). The random augmentation of a sample is drawn from a generator seeded
by ``(seed, epoch, index)``, so it does not depend on the number of loader workers, and a run
stopped mid-epoch resumes with exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rotdet.data.dataset import collate

__all__ = ["EpochSampler", "SeededAugmentation", "build_train_loader"]


class SeededAugmentation(torch.utils.data.Dataset):
    """Wraps a dataset so that the key ``(epoch, i)`` gives sample ``i`` transformed with torch's RNG
    seeded from ``(seed, epoch, i)`` (the calling process's global RNG is left as it was). The epoch
    travels in the key, so persistent loader workers need no notice of a new epoch."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, idx = key
        # A fixed odd multiplier mixes the three numbers into one 63-bit seed.
        seed = ((self.seed * 1_000_003 + int(epoch)) * 2_654_435_761 + int(idx)) % (2**63 - 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[idx]


class EpochSampler(torch.utils.data.Sampler[int]):
    """Per-epoch shuffled indices, sharded over ranks, that can start part-way into an epoch.

    Args:
        size: dataset length.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        rank, world_size: this process's shard.
        shuffle: False gives ``0..size-1`` (padded and sharded).
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world_size, self.shuffle = (
            size,
            int(seed),
            rank,
            world_size,
            shuffle,
        )
        self.epoch = 0
        self.start = 0  # samples of this rank's shard already consumed (resume mid-epoch)
        self.per_rank = -(-size // world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]  # DistributedSampler's padding
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


class _EpochBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of ``(epoch, index)`` pairs from an :class:`EpochSampler` (incomplete last batch
    kept, as mmdet's loaders do)."""

    def __init__(self, sampler: EpochSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self):
        batch: list[tuple[int, int]] = []
        for idx in self.sampler:
            batch.append((self.sampler.epoch, idx))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


def build_train_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[torch.utils.data.DataLoader, EpochSampler]:
    """The training loader and its sampler, whose epoch (and start) the trainer sets each epoch."""
    seeded = SeededAugmentation(dataset, seed)
    sampler = EpochSampler(len(dataset), seed, rank, world_size, shuffle=True)
    loader = torch.utils.data.DataLoader(
        seeded,
        batch_sampler=_EpochBatches(sampler, batch_size),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )
    return loader, sampler
