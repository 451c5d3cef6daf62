"""Which images each step trains on, derived only from (seed, epoch, step, rank).

Because the order is a pure function of those numbers, a resumed run draws exactly the batches the
uninterrupted run would have, and no sampler state needs saving. Each epoch is a fresh permutation;
the global batch (``batch_size * world``) is split into contiguous per-rank slices; the last partial
global batch is dropped (SimCLR's negatives count depends on the batch size).
"""

from __future__ import annotations

import numpy as np
import torch

from simclr_search.training.data.library import ImageLibrary


def steps_per_epoch(num_images: int, batch_size: int, world: int = 1) -> int:
    steps = num_images // (batch_size * world)
    if steps == 0:
        raise ValueError(
            f"{num_images} images are fewer than one global batch of {batch_size * world}; "
            "lower --batch-size or add images"
        )
    return steps


def epoch_permutation(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_images, generator=generator)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator for one step's augmentations on one rank."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


class BatchReader:
    """Reads the uint8 images of a step from the decoded library.

    Shapes: returns ``(B, 3, S, S)`` uint8 (contiguous, CPU) for ``B = batch_size``.
    """

    def __init__(
        self, library: ImageLibrary, batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.library = library
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.steps_per_epoch = steps_per_epoch(len(library), batch_size, world)
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def indices(self, step: int) -> np.ndarray:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = epoch_permutation(len(self.library), self.seed, epoch)
            self._epoch = epoch
        global_batch = self.batch_size * self.world
        start = within * global_batch + self.rank * self.batch_size
        return self._perm[start : start + self.batch_size].numpy()

    def read(self, step: int) -> torch.Tensor:
        idx = self.indices(step)
        order = np.argsort(idx)  # sorted reads are sequential on a memmap; undo the sort after
        batch = np.empty((len(idx), *self.library.images.shape[1:]), dtype=np.uint8)
        batch[order] = self.library.images[idx[order]]
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
