"""Properties of meap.masking.mask_inputs: counts, eligibility, independence, determinism, uniformity."""

import os
import random
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from meap.masking import mask_inputs, reference_positions, sample_generators, sample_seed

MASK_ID = 999


@st.composite
def batches(draw):
    rows = draw(st.integers(1, 6))
    seq_len = draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**31))
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 500, (rows, seq_len), generator=gen)
    eligible = torch.rand(rows, seq_len, generator=gen) < draw(st.floats(0.0, 1.0))
    ratio = draw(st.floats(0.0, 0.99))
    return ids, eligible, ratio, seed


@settings(max_examples=200, deadline=None)
@given(batches())
def test_exact_mode_masks_exact_count_of_eligible_positions_only(batch):
    ids, eligible, ratio, seed = batch
    before = ids.clone()
    masked, mask = mask_inputs(ids, ratio, MASK_ID, eligible=eligible, generator=torch.Generator().manual_seed(seed))
    expected = [round(ratio * int(n)) for n in eligible.sum(dim=1)]
    assert mask.sum(dim=1).tolist() == expected
    assert not (mask & ~eligible).any()
    assert torch.equal(masked, torch.where(mask, torch.full_like(ids, MASK_ID), ids))
    assert torch.equal(ids, before), "input_ids must not be written to"


@settings(max_examples=100, deadline=None)
@given(batches())
def test_bernoulli_mode_never_masks_ineligible(batch):
    ids, eligible, ratio, seed = batch
    _, mask = mask_inputs(
        ids, ratio, MASK_ID, eligible=eligible, generator=torch.Generator().manual_seed(seed), mode="bernoulli"
    )
    assert not (mask & ~eligible).any()


@settings(max_examples=50, deadline=None)
@given(batches())
def test_ratio_zero_is_identity(batch):
    ids, eligible, _, seed = batch
    masked, mask = mask_inputs(ids, 0.0, MASK_ID, eligible=eligible, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(masked, ids) and not mask.any()


def test_default_eligibility_masks_round_of_row_length():
    ids = torch.zeros(3, 100, dtype=torch.long)
    _, mask = mask_inputs(ids, 0.15, MASK_ID, generator=torch.Generator().manual_seed(0))
    assert mask.sum(dim=1).tolist() == [15, 15, 15]


def test_rows_of_one_call_differ():
    ids = torch.zeros(8, 256, dtype=torch.long)
    _, shared = mask_inputs(ids, 0.15, MASK_ID, generator=torch.Generator().manual_seed(0))
    _, per_row = mask_inputs(ids, 0.15, MASK_ID, generator=sample_generators(0, range(8)))
    for mask in (shared, per_row):
        assert len({tuple(row.nonzero().flatten().tolist()) for row in mask}) == 8


def test_same_seed_and_sample_give_same_mask_whatever_the_batch_layout():
    ids = torch.arange(4 * 128).reshape(4, 128)
    _, first = mask_inputs(ids, 0.15, MASK_ID, generator=sample_generators(7, [10, 11, 12, 13]))
    _, again = mask_inputs(ids, 0.15, MASK_ID, generator=sample_generators(7, [10, 11, 12, 13]))
    assert torch.equal(first, again)
    # Sample 12 in another batch, at another row, next to other samples: same mask.
    _, other_layout = mask_inputs(ids[[2, 0]], 0.15, MASK_ID, generator=sample_generators(7, [12, 99]))
    assert torch.equal(other_layout[0], first[2])
    # Another run seed or another sample index: another mask.
    _, other_seed = mask_inputs(ids, 0.15, MASK_ID, generator=sample_generators(8, [10, 11, 12, 13]))
    assert not torch.equal(other_seed, first)


def test_sample_seed_is_stable_and_spreads():
    # the same in another interpreter with another hash seed (a resumed or distributed run's processes)
    program = "from meap.masking import sample_seed; print([sample_seed(s, n) for s in (0, 7) for n in (0, 12)])"
    for hash_seed in ("1", "2"):
        other = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert other.stdout.strip() == str([sample_seed(s, n) for s in (0, 7) for n in (0, 12)])
    seeds = {sample_seed(s, n) for s in range(4) for n in range(1000)}
    assert len(seeds) == 4000
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="sample_index"):
        sample_seed(0, -1)


def test_position_frequencies_are_uniform():
    rows, seq_len, ratio = 20000, 20, 0.15
    eligible = torch.ones(rows, seq_len, dtype=torch.bool)
    eligible[:, 0] = False  # a BOS-like position that must stay clean
    _, mask = mask_inputs(
        torch.zeros(rows, seq_len, dtype=torch.long),
        ratio,
        MASK_ID,
        eligible=eligible,
        generator=torch.Generator().manual_seed(3),
    )
    per_row = round(ratio * (seq_len - 1))
    frequency = mask[:, 1:].float().mean(dim=0)
    expected = per_row / (seq_len - 1)
    sigma = (expected * (1 - expected) / rows) ** 0.5
    assert mask[:, 0].sum() == 0
    assert (frequency - expected).abs().max() < 5 * sigma, frequency


def test_bernoulli_rate_matches_ratio():
    _, mask = mask_inputs(
        torch.zeros(2000, 100, dtype=torch.long),
        0.15,
        MASK_ID,
        generator=torch.Generator().manual_seed(0),
        mode="bernoulli",
    )
    assert abs(mask.float().mean().item() - 0.15) < 0.005


def test_reference_mode_reproduces_the_reference_code():
    seq_len, ratio = 64, 0.15
    ids = torch.arange(3 * seq_len).reshape(3, seq_len)
    patterns = set()
    for step in range(102):
        masked, mask = mask_inputs(ids, ratio, MASK_ID, mode="reference", step=step)
        # The reference: random.seed(50 + step % 51); random.sample(range(0, T - 1), max(1, int(T * ratio))).
        random.seed(50 + step % 51)
        expected = random.sample(range(0, seq_len - 1), max(1, int(seq_len * ratio)))
        assert sorted(mask[0].nonzero().flatten().tolist()) == sorted(expected)
        assert torch.equal(mask, mask[:1].expand_as(mask)), "one position set shared by every row"
        assert not mask[:, -1].any(), "the last input position is never masked"
        assert torch.equal(masked[mask], torch.full((int(mask.sum()),), MASK_ID))
        patterns.add(tuple(mask[0].tolist()))
    assert len(patterns) == 51, "the reference cycles through 51 patterns"
    assert reference_positions(seq_len, ratio, 5) == reference_positions(seq_len, ratio, 56)


def test_reference_mode_masks_special_tokens_like_the_reference():
    ids = torch.zeros(1, 40, dtype=torch.long)
    eligible = torch.zeros(1, 40, dtype=torch.bool)
    _, mask = mask_inputs(ids, 0.5, MASK_ID, eligible=eligible, mode="reference", step=0)
    assert mask.sum() == 20


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_unit_interval_is_rejected(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio: expected a value in \[0, 1\), got"):
        mask_inputs(torch.zeros(1, 4, dtype=torch.long), ratio, MASK_ID)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="2-D"):
        mask_inputs(torch.zeros(4, dtype=torch.long), 0.1, MASK_ID)
    with pytest.raises(ValueError, match="eligible"):
        mask_inputs(torch.zeros(2, 4, dtype=torch.long), 0.1, MASK_ID, eligible=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="generators"):
        mask_inputs(torch.zeros(2, 4, dtype=torch.long), 0.1, MASK_ID, generator=sample_generators(0, [1]))
    with pytest.raises(ValueError, match="step"):
        mask_inputs(torch.zeros(2, 4, dtype=torch.long), 0.1, MASK_ID, mode="reference")
