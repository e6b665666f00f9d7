"""Batched greedy generation for evaluation: prompts in, completions out, in the prompts' order.

Prompts are sorted by length so each batch pads little, left-padded so generation continues from the
right edge of every row, and decoded with the KV cache. Chat models (a tokenizer with a chat template)
get each prompt as one user turn through their template; base models get the text as it is.

Each prompt is prefilled on its own (no padding) and the rows are then decoded together from one
preallocated cache. Evaluation prompts often share long prefixes (every NIAH prompt starts with the same
haystack up to its needle), so when a quarter or more of all prompt tokens is shared the common prefix is
computed once and each row runs only its own remainder. Results equal one-prompt-at-a-time generation up
to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer

from meap.probes import bounded_batches
from meap.touchpoints import cache_argument

MIN_SHARED_FRACTION = 0.25  # below this, one more forward pass per row costs more than the sharing saves
_REFERENCE_CANDIDATES = 32  # rows tried as the reference prefix (each costs one comparison with every row)
CACHE = cache_argument()
# Cached positions of one decoding batch (rows x (longest prompt + new tokens)): bounds the preallocated cache
# on long prompts, where a fixed number of rows would not (8 rows of 4k tokens: 1.5 GB for a 135M model).
GENERATION_BATCH_TOKENS = 8_192


def is_chat_model(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, text: str, template: bool = True) -> str:
    """The exact string fed to the model for a user request ``text`` (``template``: a chat model's)."""
    if template and is_chat_model(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def prompt_length(tokenizer, text: str, template: bool = True) -> int:
    """Tokens the model reads for ``text`` (``template``: a chat model's included)."""
    return len(tokenizer(render_prompt(tokenizer, text, template), add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer) -> list[int] | None:
    """Token ids that end a completion: EOS and the pad token."""
    return sorted({tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}) or None


def shared_prefixes(encoded: list[list[int]]) -> tuple[int, list[int]]:
    """``(reference, prefix)``: the row whose leading tokens the others share most, and how many leading
    tokens each row shares with it (at most its length - 1, so every row still feeds its last token)."""
    lengths = np.array([len(ids) for ids in encoded])
    table = np.full((len(encoded), int(lengths.max())), -1, dtype=np.int64)
    for row, ids in enumerate(encoded):
        table[row, : len(ids)] = ids
    by_length = np.argsort(-lengths, kind="stable")
    candidates = by_length[np.linspace(0, len(encoded) - 1, min(len(encoded), _REFERENCE_CANDIDATES)).astype(int)]
    best, best_prefix = 0, np.zeros(len(encoded), dtype=np.int64)
    for candidate in dict.fromkeys(candidates.tolist()):
        width = lengths[candidate]
        prefix = np.cumprod(table[:, :width] == table[candidate, :width], axis=1).sum(axis=1)
        prefix = np.minimum(prefix, lengths - 1)
        if prefix.sum() > best_prefix.sum():
            best, best_prefix = candidate, prefix
    return best, best_prefix.tolist()


def _prefill_rows(
    model,
    encoded: list[list[int]],
    rows: list[int],
    shared: tuple[DynamicCache, list[int]] | None,
    pad_id: int,
    max_new_tokens: int,
) -> dict:
    """``generate`` inputs for ``rows``: left-padded ``input_ids``/``attention_mask`` and a cache already
    holding all but each row's last token. Rows run one at a time, unpadded (a padded batch needs an explicit
    attention mask, which takes CPU attention off its fast causal kernel), each from the first ``prefix[row]``
    positions of the shared ``trunk`` when there is one. The cache is preallocated for the whole generation
    (a growing one is copied whole at every step)."""
    device = model.device
    width = max(len(encoded[row]) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for slot, row in enumerate(rows):
        input_ids[slot, width - len(encoded[row]) :] = torch.tensor(encoded[row], device=device)
        attention_mask[slot, width - len(encoded[row]) :] = 1
    if width == 1:  # one-token prompts: nothing to prefill
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    batch_cache = None  # the preallocated cache, made once the first (longest) row's shapes are known
    for slot, row in enumerate(rows):
        start = shared[1][row] if shared else 0
        cache = DynamicCache(
            [(layer.keys[:, :, :start], layer.values[:, :, :start]) for layer in shared[0].layers] if shared else None
        )
        remainder = encoded[row][start:-1]
        if remainder:
            model(
                input_ids=torch.tensor([remainder], device=device), **{CACHE: cache}, use_cache=True, logits_to_keep=1
            )
        cached = len(encoded[row]) - 1
        if not cached:
            continue
        if batch_cache is None:
            batch_cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
            for layer, own in zip(batch_cache.layers, cache.layers):  # keys and values may differ in head size
                layer.update(*(_zeros_like_batch(tensor, len(rows), width - 1) for tensor in (own.keys, own.values)))
        for layer, own in zip(batch_cache.layers, cache.layers):  # each row written once, into its final place
            layer.keys[slot, :, width - 1 - cached : width - 1] = own.keys[0]
            layer.values[slot, :, width - 1 - cached : width - 1] = own.values[0]
        del cache  # one row's own cache at a time
    return {"input_ids": input_ids, "attention_mask": attention_mask, CACHE: batch_cache}


def _zeros_like_batch(tensor: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """A zero view shaped as ``rows`` rows of ``length`` cached positions like ``tensor``'s (no memory of its own):
    the static cache takes it to allocate itself and count those positions as filled."""
    return tensor.new_zeros(()).expand(rows, tensor.shape[1], length, tensor.shape[3])


def _has_plain_cache(model) -> bool:
    """Whether every decoder layer keeps a plain key/value cache, which can be cut and stacked at any position
    (sliding-window and recurrent layers cannot)."""
    if getattr(model.generation_config, "cache_implementation", None):
        return False  # the model asks for its own cache kind, which generate() will not combine with ours
    try:
        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
    except (ValueError, TypeError, AttributeError):
        return False


def _trunk_cache(model, encoded: list[list[int]], share_prefixes: bool) -> tuple[DynamicCache, list[int]] | None:
    """The shared prefix's key/values and each row's share of it, or None when sharing would not pay."""
    if not share_prefixes or len(encoded) < 2:
        return None
    reference, prefix = shared_prefixes(encoded)
    # what the other rows reuse: the reference row computes its own prefix either way
    if sum(prefix) - prefix[reference] < MIN_SHARED_FRACTION * sum(len(ids) for ids in encoded):
        return None
    device = model.device
    trunk = model(
        input_ids=torch.tensor([encoded[reference][: max(prefix)]], device=device), use_cache=True, logits_to_keep=1
    )[CACHE]
    return trunk, prefix


@torch.no_grad()
def generate(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: bool = True,
    description: str = "generating",
    share_prefixes: bool = True,
    sampling: dict | None = None,
    template: bool = True,
) -> list[str]:
    """Greedy completions of ``texts`` (special tokens stripped), in the order of ``texts``; ``sampling``
    (``temperature``, ``top_k``, ``top_p``) samples instead, from torch's global generator."""
    rendered = [render_prompt(tokenizer, text, template) for text in texts]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
    if not encoded:
        return []
    if not all(encoded):
        raise ValueError(f"prompt {[len(ids) for ids in encoded].index(0)} is empty: there is nothing to continue")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    completions: list[str] = [""] * len(texts)
    device = model.device
    plain_cache = _has_plain_cache(model)
    shared = _trunk_cache(model, encoded, share_prefixes) if plain_cache else None
    bar = tqdm(total=len(texts), desc=description, unit="prompt", disable=not progress)
    batches = bounded_batches(
        [len(encoded[row]) + max_new_tokens for row in order], batch_size, GENERATION_BATCH_TOKENS
    )
    for number, slots in enumerate(batches):
        rows = [order[slot] for slot in slots]
        if plain_cache:
            batch = _prefill_rows(model, encoded, rows, shared, tokenizer.pad_token_id, max_new_tokens)
            if number == len(batches) - 1:
                shared = None  # the trunk is read no more: freed before the last batch decodes
        else:  # the model's own cache, prompts padded into one batch
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt")
            batch = {key: value.to(device) for key, value in batch.items()}
        decoding = {"do_sample": True, **sampling} if sampling else {"do_sample": False}
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            **decoding,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(tokenizer),
            use_cache=True,
            disable_compile=True,
        )  # a static cache would trigger compiling
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        del batch  # its cache is freed before the next batch prefills, not after
        for row, tokens in zip(rows, new_tokens):
            completions[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        bar.update(len(rows))
    bar.close()
    return completions


def complete(config) -> list[str]:
    """``meap generate``: ``config.prompts`` (a :class:`~meap.config.commands.GenerateConfig`) continued by its
    model, greedily or sampled, in the prompts' order."""
    from meap.errors import warn
    from meap.models import load_causal_lm

    model, tokenizer = load_causal_lm(config.model, dtype=config.dtype)
    longest = max(prompt_length(tokenizer, text, not config.raw) for text in config.prompts)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and longest + config.max_new_tokens > positions:
        warn(
            f"{config.model}: a prompt of {longest} tokens plus {config.max_new_tokens} new ones passes the "
            f"{positions} positions the model was built for; what follows them is extrapolation"
        )
    sampling = None
    if config.temperature > 0:
        sampling = {"temperature": config.temperature, "top_k": config.top_k or None, "top_p": config.top_p}
    torch.manual_seed(config.seed)
    return generate(
        model,
        tokenizer,
        config.prompts,
        max_new_tokens=config.max_new_tokens,
        batch_size=len(config.prompts),
        progress=False,
        share_prefixes=False,
        sampling=sampling,
        template=not config.raw,
    )
