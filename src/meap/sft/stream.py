"""The seeded sample stream of a fine-tuning run: conversations epoch after epoch, optionally packed."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's order: distinct for every (seed, epoch), so no two training seeds share an
    epoch's order (``seed + epoch`` made seed 0's epoch 1 seed 1's epoch 0)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SFTStream(torch.utils.data.Dataset):
    """Conversations in a seeded order, epoch after epoch, as samples for :class:`meap.sft.collator.MeapSFTCollator`.

    Epoch ``e`` visits every conversation once in its own seeded order; the ``k``-th conversation of the
    stream gets ``sample_index = e·N + position``, so its masks differ between epochs and are the same for
    the MEAP and NTP runs' identical data order. Without ``pack_lengths`` a sample is one conversation.
    With them (tokens each conversation's rows take, at most ``max_length``), a sample is a pack
    ``{"pack": [...]}``: each epoch's conversations, in order, go best-fit into sequences of ``max_length``;
    a conversation longer than that (the separate layout's two rows) gets a pack of its own.
    """

    def __init__(
        self,
        conversations: Sequence[list[tuple[list[int], bool]]],
        *,
        epochs: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        pack_lengths: Sequence[int] | None = None,
        max_length: int | None = None,
    ):
        if pack_lengths is not None and max_length is None:
            raise ValueError("packing needs max_length (the length of a packed sequence)")
        self.conversations = conversations
        self.packing = pack_lengths is not None
        self.items: list[list[tuple[int, int]]] = []  # each: (conversation, sample_index) pairs
        size = len(conversations)
        for epoch in range(epochs):
            order = (
                torch.randperm(size, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()
                if shuffle
                else list(range(size))
            )
            visits = [(conversation, epoch * size + position) for position, conversation in enumerate(order)]
            if pack_lengths is None:
                self.items += [[visit] for visit in visits]
            else:
                self.items += _best_fit(visits, pack_lengths, max_length)

    @classmethod
    def covering(cls, conversations, num_samples: int, **options) -> SFTStream:
        """The stream of as many epochs as ``num_samples`` samples need (packs per epoch vary with packing)."""
        epochs = -(-num_samples // max(1, len(cls(conversations, epochs=1, **options))))
        while len(stream := cls(conversations, epochs=epochs, **options)) < num_samples:
            epochs += 1
        return stream

    def truncate(self, num_samples: int) -> SFTStream:
        """Keep the first ``num_samples`` samples (a run's steps x samples per step); returns the stream."""
        self.items = self.items[:num_samples]
        return self

    def __len__(self) -> int:
        return len(self.items)

    def _sample(self, conversation: int, sample_index: int) -> dict:
        return {"segments": self.conversations[conversation], "sample_index": sample_index}

    def __getitem__(self, index: int) -> dict:
        visits = self.items[index]
        if self.packing:
            return {"pack": [self._sample(*visit) for visit in visits]}
        return self._sample(*visits[0])


def _best_fit(visits: list[tuple[int, int]], lengths: Sequence[int], capacity: int) -> list[list[tuple[int, int]]]:
    """Visits into bins of ``capacity`` tokens, each into the fullest bin it fits (bins keep visit order);
    a visit longer than ``capacity`` opens a bin that nothing else joins (its free room is negative)."""
    bins: list[list[tuple[int, int]]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin), sorted
    for visit in visits:
        need = lengths[visit[0]]
        slot = bisect.bisect_left(free, (need, -1))
        if slot < len(free):
            room, chosen = free.pop(slot)
        else:
            room, chosen = capacity, len(bins)
            bins.append([])
        bins[chosen].append(visit)
        bisect.insort(free, (room - need, chosen))
    return bins
