"""Teacher-forced retrieval probes: cheap measurements of a skill while a model trains.

A probe file is JSONL, one probe per line::

    {"context": "... The special magic number for apple is:", "answer": " 4821937",
     "distractors": [" 1290384", " 5550123"]}

``context`` is what the model reads; ``answer`` is the continuation that is right, ``distractors`` (optional)
the continuations that a model relying on something other than the asked key would give (the values of
other needles in the context). Candidates are tokenised on their own and appended to the context, as the
training text is cut by a byte-level BPE (a leading space belongs to the token that follows it).

Scores, each a mean over probes (:func:`score_probes`):

* ``accuracy``: every token of the answer is the model's top prediction, given the ones before it (the
  answer that greedy decoding would give, without generating);
* ``choice``: the answer is the most probable of the answer and its distractors;
* ``answer_p`` and ``distractor_p``: the probability of the whole answer, and the summed probability of the
  whole distractors (where the mass goes: a copier of any value splits it between them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from meap.errors import UserError

SCORES = ("accuracy", "choice", "answer_p", "distractor_p")


@dataclass(frozen=True)
class Probe:
    context: list[int]
    candidates: list[list[int]]  # the answer first, then the distractors


def read_probe_file(path: str | Path) -> list[dict]:
    """The probe records of a JSONL file; :class:`UserError` naming the line of the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: probe file not found")
    from meap.data.sources import json_lines

    expected = (
        "a JSON object with a string `context`, a non-empty string `answer` and optionally `distractors`, "
        "a list of non-empty strings"
    )
    records = []
    for where, record in json_lines(path, expected):  # gzipped or not, by its bytes
        distractors = record.get("distractors", [])
        if (
            not isinstance(record.get("context"), str)
            or not isinstance(record.get("answer"), str)
            or not record["answer"]
            or not isinstance(distractors, list)
            or not all(isinstance(d, str) and d for d in distractors)
        ):
            raise UserError(f"{where}: expected {expected}")
        records.append(record)
    if not records:
        raise UserError(f"{path}: the probe file holds no probe")
    return records


def tokenize_probes(
    records: list[dict], tokenizer, max_length: int | None = None, source: str = "probes"
) -> list[Probe]:
    """Token ids of each probe; :class:`UserError` if one is longer than ``max_length`` (the trained length)."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    probes = []
    for number, record in enumerate(records, 1):
        probe = Probe(ids(record["context"]), [ids(record["answer"]), *map(ids, record.get("distractors", []))])
        longest = len(probe.context) + max(map(len, probe.candidates))
        if max_length is not None and longest > max_length:
            raise UserError(
                f"{source}: probe {number} takes {longest} tokens, more than the {max_length} the model is trained on"
            )
        probes.append(probe)
    return probes


# Tokens of one forward pass of probe rows (rows x the longest): bounds the activations on long contexts,
# where a fixed number of rows would not (64 rows of 6,000 tokens hold gigabytes).
PROBE_BATCH_TOKENS = 16_384


def bounded_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` in consecutive batches of at most ``batch_size``, each within ``max_tokens``
    (rows x the longest; a row longer than that forms a batch of its own)."""
    batches, batch, width = [], [], 0
    for index, length in enumerate(lengths):
        wider = max(width, length)
        if batch and (len(batch) == batch_size or wider * (len(batch) + 1) > max_tokens):
            batches.append(batch)
            batch, wider = [], length
        batch.append(index)
        width = wider
    return batches + ([batch] if batch else [])


def _probe_batches(rows: list, batch_size: int) -> list[list]:
    """Consecutive rows, at most ``batch_size`` and about :data:`PROBE_BATCH_TOKENS` (rows x longest) each."""
    batches = bounded_batches([len(row[2]) for row in rows], batch_size, PROBE_BATCH_TOKENS)
    return [[rows[index] for index in batch] for batch in batches]


# From this many context tokens on, a probe's candidates are scored on one pass over its context (its KV
# cache, rewound after each candidate) instead of a row per candidate that repeats the context: 75
# key-value candidates over 6,000 tokens would be 75 passes over the same 6,000 tokens.
SHARED_CONTEXT_TOKENS = 512


def _on_shared_context(model, probe: Probe, device) -> tuple[bool, list[float]]:
    """(whether every answer token is the top prediction, each candidate's log-probability) of one probe."""
    from transformers import DynamicCache

    from meap.touchpoints import cache_argument

    cache, keyword = DynamicCache(), cache_argument()
    context = torch.tensor([probe.context], device=device)
    first = model(input_ids=context, **{keyword: cache}, use_cache=True, logits_to_keep=1).logits[0].float()
    first = torch.log_softmax(first, dim=-1).cpu()  # (1, vocab): predicts each candidate's first token
    scores, top = [], True
    for slot, candidate in enumerate(probe.candidates):
        predicted = first
        if len(candidate) > 1:  # the candidate's own tokens, read on the cached context
            rest = model(
                input_ids=torch.tensor([candidate[:-1]], device=device), **{keyword: cache}, use_cache=True
            ).logits[0]
            cache.crop(1 - len(candidate))  # back to the context alone (crop counts tokens to drop)
            predicted = torch.cat([first, torch.log_softmax(rest.float(), dim=-1).cpu()])
        targets = torch.tensor(candidate)
        scores.append(float(predicted.gather(1, targets[:, None]).sum()))
        if slot == 0:
            top = bool((predicted.argmax(-1) == targets).all())
    return top, scores


@torch.no_grad()
def probe_log_probs(model, probes: list[Probe], batch_size: int = 64) -> list[tuple[bool, list[float]]]:
    """Per probe: whether every answer token is the top prediction, and the log-probability of each candidate
    (the answer first), under ``model`` in eval mode, its mode restored.

    Rows are padded on the left, with their own positions, so every row's candidate tokens end the batch and
    the model computes logits for those last positions alone (``logits_to_keep``): the logits of a whole
    long context over a vocabulary of 50,000 would take gigabytes for a handful of tokens read. A probe of
    several candidates on a long context reads the context once (:data:`SHARED_CONTEXT_TOKENS`)."""
    shared = {i for i, p in enumerate(probes) if len(p.candidates) > 1 and len(p.context) >= SHARED_CONTEXT_TOKENS}
    rows = [
        (index, slot, probe.context + candidate, len(probe.context))
        for index, probe in enumerate(probes)
        if index not in shared
        for slot, candidate in enumerate(probe.candidates)
    ]
    log_p = [[0.0] * len(probe.candidates) for probe in probes]
    top = [True] * len(probes)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for index in sorted(shared):
            top[index], log_p[index] = _on_shared_context(model, probes[index], device)
        for batch in _probe_batches(rows, batch_size):
            width = max(len(ids) for _, _, ids, _ in batch)
            read = max(len(ids) - context for _, _, ids, context in batch) + 1  # positions predicting them
            input_ids = torch.zeros(len(batch), width, dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            for row, (_, _, ids, _) in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)  # as if unpadded
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
                logits_to_keep=read,
            ).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()  # (rows, read, vocab)
            for row, (index, slot, ids, context) in enumerate(batch):
                # the logits at position t predict token t + 1; the last kept position predicts nothing
                targets = torch.tensor(ids[context:])
                predicted = log_probs[row, read - 1 - len(targets) : read - 1]
                log_p[index][slot] = float(predicted.gather(1, targets[:, None]).sum())
                if slot == 0:
                    top[index] = bool((predicted.argmax(-1) == targets).all())
    finally:
        model.train(was_training)
    return list(zip(top, log_p))


def score_probes(model, probes: list[Probe], batch_size: int = 64) -> dict[str, float]:
    """The mean scores of ``probes`` (module docstring) under ``model``."""
    scored = probe_log_probs(model, probes, batch_size)
    answer_p = [math.exp(p[0]) for _, p in scored]
    distractor_p = [sum(math.exp(x) for x in p[1:]) for _, p in scored]
    choice = [float(p[0] > max(p[1:])) if len(p) > 1 else 1.0 for _, p in scored]
    count = len(probes)
    return {
        "accuracy": sum(top for top, _ in scored) / count,
        "choice": sum(choice) / count,
        "answer_p": sum(answer_p) / count,
        "distractor_p": sum(distractor_p) / count,
    }


@dataclass
class ProbeSchedule:
    """Probes scored every ``every`` optimizer steps (and at the last), for :class:`meap.monitor.MetricsCallback`."""

    probes: list[Probe]
    every: int

    def due(self, step: int, last: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == last)

    def score(self, model) -> dict[str, float]:
        return {f"probe_{name}": round(value, 6) for name, value in score_probes(model, self.probes).items()}
