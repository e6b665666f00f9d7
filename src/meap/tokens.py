"""The ``[MASK]`` token: adding it to a tokenizer and growing a model's embeddings to match."""

from __future__ import annotations

import hashlib
import json

import torch
from tokenizers import AddedToken

from meap.constants import MASK_TOKEN


def mask_token_id(tokenizer) -> int | None:
    """The id of ``[MASK]`` in ``tokenizer``, or ``None`` if it has none."""
    token_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        return None
    return int(token_id)


def special_token_ids(tokenizer) -> list[int]:
    """Ids of every special token of ``tokenizer`` (BOS, EOS, PAD, ``[MASK]``, ...): never masked."""
    return sorted({int(i) for i in tokenizer.all_special_ids if i is not None})


def add_mask_token(tokenizer, model: torch.nn.Module | None = None, pad_to_multiple_of: int | None = None) -> int:
    """Add ``[MASK]`` to ``tokenizer`` as a special token and make ``model`` able to embed it.

    A no-op for a tokenizer that already has ``[MASK]`` and a model whose embedding already covers it.
    A newly added token gets the mean of the existing rows, in the input embedding and in an untied output
    head, so it starts as an "average" token rather than noise. Returns the id of ``[MASK]``.
    """
    token_id = mask_token_id(tokenizer)
    newly_added = token_id is None
    if model is not None:
        check_vocab_fits(tokenizer, model)
    if newly_added:
        token = AddedToken(MASK_TOKEN, special=True, normalized=False, lstrip=False, rstrip=False)
        if tokenizer.mask_token is None:
            tokenizer.add_special_tokens({"mask_token": token})
        else:
            tokenizer.add_tokens([token], special_tokens=True)
        token_id = mask_token_id(tokenizer)
        if token_id is None:  # pragma: no cover - a tokenizer that refuses added tokens
            raise ValueError(f"could not add {MASK_TOKEN} to {type(tokenizer).__name__}")
    if model is not None:
        fit_mask_embedding(model, token_id, initialise=newly_added, pad_to_multiple_of=pad_to_multiple_of)
    return token_id


def check_vocab_fits(tokenizer, model: torch.nn.Module) -> None:
    """Raise if ``tokenizer``'s tokens other than ``[MASK]`` have no embedding row in ``model``."""
    rows = model.get_input_embeddings().weight.shape[0]
    without_mask = len(tokenizer) - (mask_token_id(tokenizer) is not None)
    if without_mask > rows:
        raise ValueError(
            f"the tokenizer has {without_mask} tokens besides {MASK_TOKEN} but the model embeds only {rows}: "
            "they do not belong to the same model"
        )


def _vocabulary(tokenizer) -> dict[str, int]:
    return {token: int(i) for token, i in tokenizer.get_vocab().items() if token != MASK_TOKEN}


def vocabulary_mismatch(tokenizer, reference) -> str | None:
    """How ``tokenizer``'s vocabulary differs from ``reference``'s, or None when they are the same.

    ``[MASK]`` is left out of the comparison unless both have it (then its id must agree): a model's own
    tokenizer gains it when data is prepared with it, at the next free id.
    """
    ours, theirs = _vocabulary(tokenizer), _vocabulary(reference)
    if ours != theirs:
        if len(ours) != len(theirs):
            return f"{len(ours)} tokens besides {MASK_TOKEN} against {len(theirs)}"
        token, i = next((t, i) for t, i in sorted(ours.items(), key=lambda item: item[1]) if theirs.get(t) != i)
        return f"token {token!r} is id {i} in one and {theirs.get(token, 'absent')} in the other"
    mine, reference_mask = mask_token_id(tokenizer), mask_token_id(reference)
    if mine is not None and reference_mask is not None and mine != reference_mask:
        return f"{MASK_TOKEN} is id {mine} in one and {reference_mask} in the other"
    return None


def vocabulary_sha256(tokenizer) -> str:
    """A fingerprint of the whole vocabulary (``[MASK]`` included): two tokenizers that encode alike share it."""
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")).hexdigest()


@torch.no_grad()
def fit_mask_embedding(
    model: torch.nn.Module, token_id: int, *, initialise: bool, pad_to_multiple_of: int | None = None
) -> None:
    """Make sure ``model`` has an embedding row for ``token_id``.

    Rows the embedding has to grow by are always set to the mean of the old rows. An existing row (a
    padded vocabulary's spare row) is set to the mean of the rows before it only when ``initialise`` is true:
    the token is new to this model, so that row was never trained.
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    if token_id < old_rows:
        if not initialise:
            return
        first_new, mean_of = token_id, token_id
    else:
        model.resize_token_embeddings(token_id + 1, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
        first_new, mean_of = old_rows, old_rows
    layers = {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    for layer in layers.values():  # one entry when input and output embeddings are tied
        layer.weight[first_new : token_id + 1] = layer.weight[:mean_of].mean(dim=0, keepdim=True)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias[first_new : token_id + 1] = bias[:mean_of].mean()
