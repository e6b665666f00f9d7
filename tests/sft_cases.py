"""Fine-tuning data of the tests, shared by several test modules (this is not a test module): toy token
conversations for the collator, word-sequence records of each instruction format, a small SFT config."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from meap.config import SFTConfig, load_config
from meap.sft.collator import MeapSFTCollator

MASK, EOS, PAD, IGNORE = 97, 0, 98, -100


def conversation(prompt_len: int, answer_len: int, offset: int = 1):
    prompt = [(offset + i) % 90 + 1 for i in range(prompt_len)]
    answer = [(offset * 7 + i) % 90 + 1 for i in range(answer_len)]
    return [(prompt, False), (answer, True)]


CONVERSATIONS = [
    conversation(8, 60, 1),
    conversation(5, 20, 2),
    conversation(12, 70, 3),
    [*conversation(4, 30, 4), ([5, 6, 7], False), ([8] * 40, True)],
]  # multi-turn


def collator(**kwargs) -> MeapSFTCollator:
    return MeapSFTCollator(MASK, EOS, PAD, **{"mask_ratio": 0.1, "min_answer_tokens": 50, **kwargs})


def samples(indices=None):
    indices = range(len(CONVERSATIONS)) if indices is None else indices
    return [{"segments": CONVERSATIONS[i], "sample_index": i} for i in indices]


def per_row_token_losses(model, batch) -> list[torch.Tensor]:
    """Cross-entropy of every supervised target, grouped by training row, in row order."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    losses = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], reduction="none", ignore_index=IGNORE
    )
    rows = []
    for b in range(batch["input_ids"].shape[0]):
        if "position_ids" in batch:
            starts = (batch["position_ids"][b] == 0).nonzero().flatten().tolist()
        else:
            starts = [0]
        targets = batch["labels"][b, 1:] != IGNORE
        bounds = starts[1:] + [batch["input_ids"].shape[1]]
        for start, end in zip(starts, bounds):
            span = slice(start, end - 1)
            if targets[span].any():
                rows.append(losses[b, span][targets[span]])
    return rows


WORDS = (
    "river stone lantern meadow copper violet harbor thistle ember quarry willow falcon marble cedar orchard tundra"
).split()


def answer(i: int, words: int = 24) -> str:
    return " ".join(WORDS[(i * 5 + k * 3) % len(WORDS)] for k in range(words)) + "."


def alpaca(i):
    return {"instruction": f"List the words of sequence {i}.", "input": "", "output": answer(i)}


def sharegpt(i):
    return {
        "conversations": [
            {"from": "system", "value": "Be exact."},
            {"from": "human", "value": f"Sequence {i}?"},
            {"from": "gpt", "value": answer(i)},
            {"from": "human", "value": "Again, shorter."},
            {"from": "gpt", "value": answer(i, 8)},
        ]
    }


def messages(i):
    return {
        "messages": [{"role": "user", "content": f"Recite sequence {i}."}, {"role": "assistant", "content": answer(i)}]
    }


def write(path, records):
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def config(model, data, output, **overrides) -> SFTConfig:
    values = dict(
        model=str(model),
        data=[str(d) for d in data],
        output=str(output),
        max_length=256,
        micro_batch_size=2,
        min_answer_tokens=10,
        lr=1e-3,
        warmup_steps=1,
        log_every=1,
        eval_every=4,
        eval_batches=1,
        save_every=4,
        keep_checkpoints=0,
        val_fraction=0.1,
        max_steps=0,
    )
    values.update(overrides)
    return load_config(SFTConfig, overrides=values)
