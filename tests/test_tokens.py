"""meap.tokens.add_mask_token on a real GPT-2 tokenizer and tiny Llama models."""

import pytest
import torch
from transformers import AutoTokenizer

from meap.tokens import MASK_TOKEN, add_mask_token, mask_token_id

from conftest import tiny_llama


@pytest.mark.parametrize("tied", [False, True])
def test_add_mask_token_grows_embeddings_with_the_mean_row(gpt2_tokenizer, tied):
    model = tiny_llama(len(gpt2_tokenizer), tied=tied)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()

    token_id = add_mask_token(gpt2_tokenizer, model)

    assert token_id == 50257 == mask_token_id(gpt2_tokenizer)
    assert gpt2_tokenizer.convert_ids_to_tokens(token_id) == MASK_TOKEN
    assert gpt2_tokenizer("a [MASK] b", add_special_tokens=False)["input_ids"].count(token_id) == 1
    new_in = model.get_input_embeddings().weight
    new_out = model.get_output_embeddings().weight
    assert new_in.shape[0] == new_out.shape[0] == model.config.vocab_size == 50258
    torch.testing.assert_close(new_in[:50257], old_in)
    torch.testing.assert_close(new_in[token_id], old_in.mean(dim=0))
    if tied:
        assert new_out.data_ptr() == new_in.data_ptr()
    else:
        torch.testing.assert_close(new_out[:50257], old_out)
        torch.testing.assert_close(new_out[token_id], old_out.mean(dim=0))
    with torch.no_grad():
        logits = model(torch.tensor([[1, token_id, 2]])).logits
    assert logits.shape == (1, 3, 50258) and torch.isfinite(logits).all()


def test_add_mask_token_is_a_no_op_when_present(gpt2_tokenizer):
    model = tiny_llama(len(gpt2_tokenizer))
    first = add_mask_token(gpt2_tokenizer, model)
    weights = model.get_input_embeddings().weight.detach().clone()
    assert add_mask_token(gpt2_tokenizer, model) == first
    assert len(gpt2_tokenizer) == 50258
    assert torch.equal(model.get_input_embeddings().weight, weights)


def test_padded_vocabulary_uses_the_spare_row(gpt2_tokenizer):
    model = tiny_llama(50304)  # GPT-2's vocabulary padded to a multiple of 64
    old = model.get_input_embeddings().weight.detach().clone()
    token_id = add_mask_token(gpt2_tokenizer, model)
    assert model.get_input_embeddings().weight.shape[0] == 50304
    torch.testing.assert_close(model.get_input_embeddings().weight[token_id], old[:token_id].mean(dim=0))


def test_mismatched_model_and_tokenizer_are_refused(gpt2_tokenizer):
    with pytest.raises(ValueError, match="50257 tokens besides \\[MASK\\] but the model embeds only 1000"):
        add_mask_token(gpt2_tokenizer, tiny_llama(1000))


def test_mask_survives_save_and_reload(gpt2_tokenizer, tmp_path):
    token_id = add_mask_token(gpt2_tokenizer)
    gpt2_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert mask_token_id(reloaded) == token_id
    assert MASK_TOKEN in reloaded.all_special_tokens


def test_a_tokenizer_that_already_has_mask_fits_a_model_without_the_row(gpt2_tokenizer):
    add_mask_token(gpt2_tokenizer)  # e.g. a prepared data directory's tokenizer
    model = tiny_llama(50257)  # a model trained before [MASK] existed
    old = model.get_input_embeddings().weight.detach().clone()
    assert add_mask_token(gpt2_tokenizer, model) == 50257
    assert model.get_input_embeddings().weight.shape[0] == 50258
    torch.testing.assert_close(model.get_input_embeddings().weight[50257], old.mean(dim=0))
