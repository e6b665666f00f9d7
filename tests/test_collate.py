"""MeapCollator: exact keys, literal tensors, clean labels, padding, per-sample determinism."""

import pytest
import torch

from meap.collate import MeapCollator
from meap.constants import IGNORE_INDEX

MASK_ID, EOS = 99, 0


def samples(rows, start=0):
    return [{"input_ids": row, "sample_index": start + i} for i, row in enumerate(rows)]


def test_ratio_zero_is_the_ntp_batch():
    batch = MeapCollator(None, mask_ratio=0.0)(samples([[5, 6, 7, 8], [1, 2, 3, 4]]))
    assert set(batch) == {"input_ids", "labels", "shift_labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [1, 2, 3]]
    assert batch["labels"].tolist() == [[5, 6, 7], [1, 2, 3]]
    assert batch["shift_labels"].tolist() == [[6, 7, 8], [2, 3, 4]]
    assert batch["input_ids"].dtype == torch.long


def test_masked_inputs_with_clean_labels():
    rows = [list(range(1, 42)), list(range(50, 91)), list(range(100, 141))]
    collator = MeapCollator(MASK_ID, mask_ratio=0.25, seed=3, special_token_ids=[EOS])
    batch = collator(samples(rows))
    ntp = MeapCollator(None, mask_ratio=0.0)(samples(rows))
    masked = batch["input_ids"] == MASK_ID
    assert masked.sum(dim=1).tolist() == [10, 10, 10]  # round(0.25 * 40)
    assert torch.equal(batch["labels"], ntp["labels"])
    assert torch.equal(batch["shift_labels"], ntp["shift_labels"])
    assert torch.equal(batch["input_ids"][~masked], ntp["input_ids"][~masked])


def test_special_tokens_are_never_masked():
    row = [EOS if i % 3 == 0 else 7 for i in range(61)]
    batch = MeapCollator(MASK_ID, mask_ratio=0.5, special_token_ids=[EOS])(samples([row] * 4))
    inputs = torch.tensor(row[:-1])
    assert (batch["input_ids"][:, inputs == EOS] == EOS).all()
    assert ((batch["input_ids"] == MASK_ID).sum(dim=1) == 20).all()  # round(0.5 * 40 eligible)


def test_padding_is_ignored_and_never_masked():
    batch = MeapCollator(MASK_ID, mask_ratio=0.5, pad_token_id=EOS)(samples([[5, 6, 7, 8, 9], [1, 2, 3]]))
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["shift_labels"].tolist() == [[6, 7, 8, 9], [2, 3, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["labels"][1].tolist()[2:] == [IGNORE_INDEX, IGNORE_INDEX]
    assert batch["input_ids"][1, 2:].tolist() == [EOS, EOS]
    assert (batch["input_ids"] == MASK_ID).sum(dim=1).tolist() == [2, 1]


def test_mask_depends_on_seed_and_sample_index_only():
    rows = [list(range(1, 130)) for _ in range(4)]
    collator = MeapCollator(MASK_ID, mask_ratio=0.15, seed=11)
    together = collator(samples(rows, start=40))["input_ids"]
    alone = collator(samples(rows[:1], start=42))["input_ids"]
    assert torch.equal(together[2], alone[0])
    assert len({tuple(r.tolist()) for r in together}) == 4, "rows get different masks"
    other_seed = MeapCollator(MASK_ID, mask_ratio=0.15, seed=12)(samples(rows, start=40))["input_ids"]
    assert not torch.equal(other_seed, together)


def test_reference_mode_shares_positions_within_a_step():
    rows = [list(range(1, 66))] * 8
    collator = MeapCollator(MASK_ID, mask_ratio=0.15, mode="reference", samples_per_step=8)
    first = collator(samples(rows[:4], start=0))["input_ids"]
    second = collator(samples(rows[4:], start=4))["input_ids"]  # next micro-batch, same optimizer step
    next_step = collator(samples(rows[:4], start=8))["input_ids"]
    assert torch.equal(first, second) and torch.equal(first[0], first[3])
    assert not torch.equal(first, next_step)


def test_bad_settings_are_rejected_before_the_first_batch():
    with pytest.raises(ValueError, match="mask_ratio"):
        MeapCollator(MASK_ID, mask_ratio=1.0)
    with pytest.raises(ValueError, match="add_mask_token"):
        MeapCollator(None, mask_ratio=0.1)
    with pytest.raises(ValueError, match="samples_per_step"):
        MeapCollator(MASK_ID, mode="reference")
    with pytest.raises(ValueError, match="mask_mode"):
        MeapCollator(MASK_ID, mode="spans")


def test_document_attention_restarts_positions_and_isolates_documents():
    row = [5, 6, EOS, 7, 8, 9, EOS, 4, 3]  # inputs 5 6 EOS 7 8 9 EOS 4: documents [5 6 EOS] [7 8 9 EOS] [4]
    batch = MeapCollator(None, mask_ratio=0.0, eos_token_id=EOS, document_attention="sdpa")(samples([row]))
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0]]
    allowed = batch["attention_mask"][0, 0]
    assert allowed.shape == (8, 8) and allowed.dtype == torch.bool
    assert allowed[5].tolist() == [False, False, False, True, True, True, False, False]
    assert allowed[2].tolist() == [True, True, True, False, False, False, False, False]  # an EOS ends its document
    assert batch["shift_labels"].tolist() == [[6, EOS, 7, 8, 9, EOS, 4, 3]]
    eager = MeapCollator(None, mask_ratio=0.0, eos_token_id=EOS, document_attention="eager")(samples([row]))
    assert torch.equal(eager["attention_mask"][0, 0] == 0, allowed)
    flash = MeapCollator(None, mask_ratio=0.0, eos_token_id=EOS, document_attention="flash_attention_2")(
        samples([row, row])
    )
    assert "attention_mask" not in flash and flash["input_ids"].shape == (1, 16)
    assert flash["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0] * 2]
    with pytest.raises(ValueError, match="eos_token_id"):
        MeapCollator(None, mask_ratio=0.0, document_attention="sdpa")


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_document_attention_gives_each_document_the_loss_it_has_alone(implementation):
    """A real model: per-token losses of a packed block equal those of each document run on its own."""
    from conftest import tiny_llama

    model = tiny_llama(64)
    model.config._attn_implementation = implementation
    documents = [[11, 12, 13, 14, EOS], [21, 22, 23, EOS], [31, 32, 33, 34, 35, 36]]
    block = [token for document in documents for token in document]
    batch = MeapCollator(None, mask_ratio=0.0, eos_token_id=EOS, document_attention=implementation)(samples([block]))
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits[0]
        start = 0
        for document in documents:
            length = len(document) if start + len(document) < len(block) else len(document) - 1
            alone = model(input_ids=torch.tensor([document[:length]])).logits[0]
            torch.testing.assert_close(packed[start : start + length], alone, rtol=1e-4, atol=1e-5)
            start += len(document)
    # Without document attention the later documents see the earlier ones.
    with torch.no_grad():
        mixed = model(input_ids=batch["input_ids"]).logits[0]
    assert not torch.allclose(mixed[5:9], packed[5:9], atol=1e-4)
