"""Batched generation: reusing a shared prompt prefix must give what running every prompt whole gives."""

import pytest
import torch
from tests.conftest import tiny_llama

from meap.eval.generation import CACHE, _prefill_rows, _trunk_cache, generate, shared_prefixes


def test_shared_prefixes_picks_the_row_the_others_share_most_with():
    encoded = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [1, 2, 7], [8]]
    # row 0 shares 3 tokens with row 1 and 2 with row 2; no row may share its own last token
    assert shared_prefixes(encoded) == (0, [4, 3, 2, 0])
    assert shared_prefixes([[5, 6], [5, 6]]) == (0, [1, 1])


def _prompts() -> list[str]:
    shared = " ".join(f"Line {i} of the shared document says the river ran north past the mill." for i in range(12))
    return [
        f"{shared} Note {k}: the key is {k * 37}. " + "Then the story went on. " * k + "What is the key?"
        for k in range(5)
    ] + ["An unrelated short prompt?"]


@pytest.mark.parametrize("share", [True, False])
def test_rowwise_prefill_gives_the_same_next_token_logits_as_whole_prompts(gpt2_tokenizer, share):
    model = tiny_llama(len(gpt2_tokenizer), hidden=32).eval()
    encoded = [gpt2_tokenizer(text)["input_ids"] for text in _prompts()]
    with torch.no_grad():
        shared = _trunk_cache(model, encoded, share_prefixes=share)
        if share:  # the long prompts share their document, the last one nothing
            assert min(shared[1][:5]) > 100 and shared[1][5] == 0
        rows = [4, 0, 5, 2]
        batch = _prefill_rows(model, encoded, rows, shared, 0, max_new_tokens=2)
        position_ids = batch["attention_mask"].cumsum(-1)[:, -1:] - 1
        last = model(
            input_ids=batch["input_ids"][:, -1:],
            attention_mask=batch["attention_mask"],
            **{CACHE: batch[CACHE]},
            position_ids=position_ids,
        ).logits[:, -1]
        whole = [model(input_ids=torch.tensor([encoded[row]])).logits[0, -1] for row in rows]
    torch.testing.assert_close(last, torch.stack(whole), rtol=1e-4, atol=1e-5)


def test_generation_matches_hugging_face_generate_one_prompt_at_a_time(gpt2_tokenizer):
    gpt2_tokenizer.pad_token, gpt2_tokenizer.padding_side = gpt2_tokenizer.eos_token, "left"
    model = tiny_llama(len(gpt2_tokenizer), hidden=32).eval()
    prompts = _prompts() + ["Hi"]  # "Hi" is one token: nothing to prefill, in a batch with long rows
    expected = []
    for prompt in prompts:
        ids = gpt2_tokenizer(prompt, return_tensors="pt")
        output = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=gpt2_tokenizer.pad_token_id)
        expected.append(gpt2_tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    for share in (True, False):
        assert (
            generate(
                model, gpt2_tokenizer, prompts, max_new_tokens=6, batch_size=4, progress=False, share_prefixes=share
            )
            == expected
        )
    assert len(set(expected)) > 1
    assert generate(model, gpt2_tokenizer, ["Hi"], max_new_tokens=6, progress=False) == expected[-1:]
    assert generate(model, gpt2_tokenizer, [], progress=False) == []
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, gpt2_tokenizer, ["Hi", ""], progress=False)


def test_meap_generate_greedy_by_default_sampled_with_a_seed(tiny_model_dir, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from meap.cli import main
    from meap.config import load_config
    from meap.config.commands import GenerateConfig
    from meap.eval.generation import complete

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = tokenizer("The needle is", return_tensors="pt")
    greedy = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    expected = tokenizer.decode(greedy[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def completions(**keys):
        return complete(
            load_config(
                GenerateConfig,
                None,
                {
                    "model": str(tiny_model_dir),
                    "max_new_tokens": 8,
                    **keys,
                    "prompts": keys.get("prompts", ["The needle is"]),
                },
            )
        )

    assert completions() == [expected]
    hot = {"temperature": 5.0, "top_p": 0.99}
    first, again, other = completions(**hot, seed=1), completions(**hot, seed=1), completions(**hot, seed=2)
    assert first == again and first != other and first != [expected]  # sampled, and reproducibly so
    # top_k=1 keeps only the likeliest token: sampling collapses to greedy decoding
    assert completions(temperature=5.0, top_k=1) == [expected]

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "8", "The needle is", "Hello"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"[1] {expected}" and lines[1].startswith("[2] ") and len(lines) == 2


def test_meap_generate_renders_a_chat_models_template_unless_raw(tiny_model_dir):
    from transformers import AutoTokenizer

    from meap.config import load_config
    from meap.config.commands import GenerateConfig
    from meap.eval.generation import complete, render_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
    tokenizer.save_pretrained(tiny_model_dir)
    assert render_prompt(tokenizer, "Hi") == "<|user|>Hi<|assistant|>" and render_prompt(tokenizer, "Hi", False) == "Hi"

    def completion(raw):
        return complete(
            load_config(
                GenerateConfig, None, {"model": str(tiny_model_dir), "max_new_tokens": 6, "raw": raw, "prompts": ["Hi"]}
            )
        )

    assert completion(raw=False) != completion(raw=True)


def test_batches_bounded_by_cached_tokens_give_the_same_completions(gpt2_tokenizer, monkeypatch):
    """Long prompts split into more batches than ``batch_size`` asks (the trunk freed before the last one):
    the completions stay those of one big batch."""
    import meap.eval.generation as generation

    gpt2_tokenizer.pad_token = gpt2_tokenizer.eos_token
    model = tiny_llama(len(gpt2_tokenizer), hidden=32).eval()
    prompts = _prompts()
    whole = generate(model, gpt2_tokenizer, prompts, max_new_tokens=5, batch_size=8, progress=False)
    monkeypatch.setattr(generation, "GENERATION_BATCH_TOKENS", 500)  # two rows of these prompts (about 200 tokens)
    assert generate(model, gpt2_tokenizer, prompts, max_new_tokens=5, batch_size=8, progress=False) == whole
    assert len(set(whole)) > 1


_MEASURE = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
from conftest import tiny_llama
from transformers import AutoTokenizer
import meap.eval.generation as generation
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
tokenizer.pad_token = tokenizer.eos_token
generation.GENERATION_BATCH_TOKENS = int(sys.argv[3])
model = tiny_llama(len(tokenizer), hidden=256, max_positions=4096).eval()
prompts = [f"Record {row}: " + " ".join(f"item {row * 7 + i} is blue" for i in range(850)) for row in range(16)]
generation.generate(model, tokenizer, prompts[:1], max_new_tokens=2, progress=False)  # warm: kernels, allocator
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
generation.generate(model, tokenizer, prompts, max_new_tokens=2, batch_size=16, progress=False, share_prefixes=False)
print(json.dumps({"grown_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def _grown_mib(tokenizer_dir, batch_tokens: int) -> float:
    import json
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(Path(__file__).parents[1]), str(tokenizer_dir), str(batch_tokens)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["grown_mib"]


def test_long_prompts_decode_within_a_bounded_cache(gpt2_tokenizer, tmp_path):
    """16 prompts of about 3,500 tokens at batch size 16: one cache for all would hold 56k positions (110 MiB
    at this width, and as much again staged while it filled, issue 38's 2 GB at 4k tokens on SmolLM2); the
    batches stay near 8k positions, a row's own cache and its activations."""
    gpt2_tokenizer.save_pretrained(tmp_path)
    assert _grown_mib(tmp_path, 8_192) < 80


def test_no_shared_trunk_when_only_the_reference_row_would_reuse_it():
    """Key-value prompts share their instruction and little else: the reference row's own prefix is no saving,
    and a trunk kept for it would hold a whole prompt's cache through the evaluation (issue 38)."""
    model = tiny_llama(64, hidden=16).eval()
    encoded = [[1, 2, 3] + [10 + row] * 200 for row in range(4)]
    with torch.no_grad():
        assert _trunk_cache(model, encoded, share_prefixes=True) is None
        shared = _trunk_cache(model, [[1, 2, 3] * 60 + [10 + row] for row in range(4)], share_prefixes=True)
    assert shared is not None and shared[1] == [180] * 4
