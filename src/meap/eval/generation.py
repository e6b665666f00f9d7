"""Batched greedy generation for evaluation: prompts in, completions out, in the prompts' order.

Prompts are sorted by length so each batch pads little, left-padded so generation continues from the
right edge of every row, and decoded with the KV cache. Chat models (a tokenizer with a chat template)
get each prompt as one user turn through their template; base models get the text as it is.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def is_chat_model(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, text: str) -> str:
    """The exact string fed to the model for a user request ``text``."""
    if is_chat_model(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def prompt_length(tokenizer, text: str) -> int:
    """Tokens the model reads for ``text`` (template included)."""
    return len(tokenizer(render_prompt(tokenizer, text), add_special_tokens=False)["input_ids"])


@torch.no_grad()
def generate(model, tokenizer, texts: list[str], *, max_new_tokens: int = 32, batch_size: int = 8,
             progress: bool = True, description: str = "generating") -> list[str]:
    """Greedy completions of ``texts`` (special tokens stripped), in the order of ``texts``."""
    rendered = [render_prompt(tokenizer, text) for text in texts]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    completions: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    bar = tqdm(total=len(texts), desc=description, unit="prompt", disable=not progress)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt")
        batch = {key: value.to(device) for key, value in batch.items()}
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stop) or None,
                                use_cache=True)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        for row, tokens in zip(rows, new_tokens):
            completions[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        bar.update(len(rows))
    bar.close()
    return completions
