"""A sentence-transformers batch sampler that keeps the prepared row order.

Its own module (imported only when training) because the Trainer pickles its arguments, the
sampler class included, into every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

from sentence_transformers.base.sampler import DefaultBatchSampler


class SequentialBatchSampler(DefaultBatchSampler):
    """Rows 0..n-1 in order, ``batch_size`` at a time: the order (group-unique batches, seeded
    epochs) is fixed by :func:`convir.train.data.group_unique_order`, and a resumed run skips
    exactly the batches already trained on."""

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.sampler)  # the dataset
        for start in range(0, n, self.batch_size):
            batch = list(range(start, min(start + self.batch_size, n)))
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)
