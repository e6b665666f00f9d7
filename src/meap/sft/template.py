"""Conversations → ``(token ids, supervised)`` segments: the turns rendered with the tokenizer's chat
template when it has one (else :data:`PLAIN_TEMPLATE`); assistant turns are supervised, everything else
(system, user, the template's markup before an answer) is prompt. Masks are not drawn here:
:func:`meap.sft.rows.build_sft_rows` draws them in the collator, anew every epoch."""

from __future__ import annotations

from meap.errors import UserError

# Used for tokenizers without a chat template (a model pretrained with `meap pretrain`, say).
PLAIN_TEMPLATE = {
    "system": "{content}\n\n",
    "user": "### Instruction:\n{content}\n\n### Response:\n",
    "assistant": "{content}\n\n",
}


def render_turns(tokenizer, turns: list[dict]) -> list[tuple[str, bool]]:
    """``(text, is_answer)`` pieces whose concatenation is the rendered conversation."""
    template = getattr(tokenizer, "chat_template", None)
    pieces: list[tuple[str, bool]] = []
    rendered = ""
    for index, turn in enumerate(turns):
        if template:
            before = (
                tokenizer.apply_chat_template(
                    turns[:index], tokenize=False, add_generation_prompt=turn["role"] == "assistant"
                )
                if index
                else ""
            )
            after = tokenizer.apply_chat_template(turns[: index + 1], tokenize=False)
            if turn["role"] == "assistant" and before.startswith(rendered) and after.startswith(before):
                pieces += [(before[len(rendered) :], False), (after[len(before) :], True)]
            elif after.startswith(rendered):
                pieces.append((after[len(rendered) :], False))
            else:  # a template that rewrites earlier turns cannot be split into prompt and answer pieces
                raise UserError(
                    "the tokenizer's chat template re-renders earlier turns; it cannot be split "
                    "into prompt and answer pieces"
                )
            rendered = after
        else:
            text = PLAIN_TEMPLATE[turn["role"]].format(content=turn["content"])
            pieces.append((text, turn["role"] == "assistant"))
    if template and pieces:  # end on the end-of-turn token itself, so it can serve as the EOS
        pieces[-1] = (pieces[-1][0].rstrip("\n"), pieces[-1][1])
    return [(text, answer) for text, answer in pieces if text]


def tokenize_conversation(tokenizer, turns: list[dict]) -> list[tuple[list[int], bool]]:
    """``(token ids, supervised)`` segments of a conversation, ready for :func:`meap.sft.rows.build_sft_rows`."""
    return [
        (tokenizer(text, add_special_tokens=False)["input_ids"], answer)
        for text, answer in render_turns(tokenizer, turns)
    ]
