"""The run's stream of training samples: fixed-length blocks cut from packed token shards.

A shard of N tokens holds ``(N - 1) // seq_len`` blocks of ``seq_len + 1`` tokens; consecutive blocks
overlap by one token, so every token is a target exactly once. Sample ``n`` of the stream is block
``permutation(epoch)[n % num_blocks]`` with ``epoch = n // num_blocks`` and a permutation seeded by
(seed, epoch): the order is a pure function of (seed, n), the same for NTP and MEAP runs, for any
world size, and after a resume. Blocks never cross shard boundaries; documents inside a block are
separated by EOS and attend to each other, as in standard packed pretraining.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class PackedBlocks(Dataset):
    """``num_samples`` samples ``{"input_ids": (seq_len + 1,) int64, "sample_index": n}``."""

    def __init__(
        self,
        shards: list[np.ndarray],
        seq_len: int,
        num_samples: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.shards = shards
        self.seq_len = seq_len
        self.seed = seed
        self.shuffle = shuffle
        per_shard = np.array([max(0, (len(s) - 1) // seq_len) for s in shards], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(per_shard)])
        self.num_blocks = int(self.shard_starts[-1])
        self.num_samples = self.num_blocks if num_samples is None else num_samples
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation) of the last epoch used

    def __len__(self) -> int:
        return self.num_samples

    def block_of(self, sample_index: int) -> int:
        epoch, offset = divmod(sample_index, self.num_blocks)
        if not self.shuffle:
            return offset
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, rng.permutation(self.num_blocks))
        return int(self._order[1][offset])

    def __getitem__(self, sample_index: int) -> dict:
        if not 0 <= sample_index < self.num_samples:
            raise IndexError(sample_index)
        block = self.block_of(sample_index)
        shard = int(np.searchsorted(self.shard_starts, block, side="right")) - 1
        start = (block - int(self.shard_starts[shard])) * self.seq_len
        tokens = np.asarray(self.shards[shard][start : start + self.seq_len + 1], dtype=np.int64)
        return {"input_ids": torch.from_numpy(tokens), "sample_index": sample_index}
