"""Teacher-forced probe scoring: the same log-probabilities as one unpadded row at a time, at a memory that
does not grow with the vocabulary times the context."""

import json
import subprocess
import sys

import torch

from meap.probes import SHARED_CONTEXT_TOKENS, Probe, probe_log_probs

from conftest import tiny_llama


def _reference(model, probe: Probe) -> tuple[bool, list[float]]:
    """Each candidate alone, unpadded, every position's logits: the definition, computed the plain way."""
    scores, top = [], True
    for slot, candidate in enumerate(probe.candidates):
        ids = torch.tensor([probe.context + candidate])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
        targets = torch.tensor(candidate)
        predicted = log_probs[len(probe.context) - 1 : -1]
        scores.append(float(predicted.gather(1, targets[:, None]).sum()))
        if slot == 0:
            top = bool((predicted.argmax(-1) == targets).all())
    return top, scores


def test_batched_left_padded_scores_are_the_unpadded_ones():
    model = tiny_llama(97, max_positions=1024).eval()
    generator = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(0, 97, (n,), generator=generator).tolist()

    # contexts of different lengths, candidates of one to three tokens, in batches that split probes
    probes = [Probe(context=ids(5 + 7 * i), candidates=[ids(1 + i % 3), ids(2), ids(1)]) for i in range(9)]
    # ...and long contexts, whose candidates are read on one shared pass over the context (its cache)
    probes += [
        Probe(context=ids(SHARED_CONTEXT_TOKENS + 40 * i), candidates=[ids(3), ids(1), ids(4)]) for i in range(3)
    ]
    probes.append(Probe(context=ids(SHARED_CONTEXT_TOKENS), candidates=[probes[-1].candidates[0]]))  # one: batched
    for batch_size in (1, 4, 64):
        for (top, scores), probe in zip(probe_log_probs(model, probes, batch_size), probes):
            expected_top, expected = _reference(model, probe)
            assert top == expected_top
            assert max(abs(a - b) for a, b in zip(scores, expected)) < 1e-4, (scores, expected)


_MEASURE = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
from conftest import tiny_llama
from meap.probes import Probe, probe_log_probs
torch.manual_seed(0)
model = tiny_llama(50257, hidden=16).eval()  # GPT-2's vocabulary: the logits of a context are what grows
context = torch.randint(0, 50257, (2000,)).tolist()
probes = [Probe(context=context, candidates=[[11, 12], [13], [14, 15, 16]]) for _ in range(4)]  # shared context
probes += [Probe(context=context, candidates=[[11, 12]]) for _ in range(8)]  # one row each, batched
probe_log_probs(model, probes[:1], 64)  # warm: kernels and allocator
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
probe_log_probs(model, probes, 64)
print(json.dumps({"grown_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def test_scoring_a_long_context_does_not_hold_its_logits():
    """20 rows of 2,000 tokens over 50,257 tokens: their full logits would be 8 GB in float32 (the cause of
    the 12-20 GB of issue 38); what is kept is a few positions per row."""
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(Path(__file__).parent)], capture_output=True, text=True, check=True
    )
    grown = json.loads(result.stdout.strip().splitlines()[-1])["grown_mib"]
    assert grown < 400, grown  # activations of 8 x 2,000 tokens at width 16, and the model's 2 layers
