"""The attention analysis on models whose attention is known by construction."""

import json
import math
from itertools import islice

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from meap.eval.attention import SEGMENTS, AttentionConfig, analyse, build_probes, evaluate

MASK = 99


def probe(lengths=(20, 6, 14, 5)):
    ids, bounds = [], {}
    for name, n in zip(SEGMENTS, lengths):
        bounds[name] = [len(ids), len(ids) + n]
        ids += [(7 * len(ids) + k) % 90 + 1 for k in range(n)]
    return {"input_ids": ids, "bounds": bounds}


def one_layer(**config) -> LlamaForCausalLM:
    torch.manual_seed(0)
    values = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
    )
    values.update(config)
    return LlamaForCausalLM(LlamaConfig(**values)).eval()


def test_uniform_attention_gives_the_segment_shares_of_the_visible_keys():
    """Zero queries: every score is 0, so row r attends uniformly to keys 0..r."""
    model = one_layer(num_hidden_layers=2)
    for layer in model.model.layers:
        torch.nn.init.zeros_(layer.self_attn.q_proj.weight)
    example = probe()
    result = analyse(model, [example, example], mask_token_id=MASK, mask_ratio=0.25)
    q0, q1 = example["bounds"]["query"]
    rows = range(q0, q1)
    for name in SEGMENTS:
        start, end = example["bounds"][name]
        expected = sum(max(0, min(end, r + 1) - start) / (r + 1) for r in rows) / len(rows)
        assert result["average"]["segment_mass"][name] == pytest.approx(expected, abs=1e-5)
    assert result["average"]["entropy"] == pytest.approx(sum(math.log(r + 1) for r in rows) / len(rows), abs=1e-4)
    assert result["samples"] == 2 and len(result["layers"]) == 2
    # Attention does not depend on the input: masking moves nothing, and uniform rows have no variance.
    assert result["average"]["score_decay"] == pytest.approx(0.0, abs=1e-5)
    assert result["average"]["variance_increase"] is None


def test_keys_of_mask_tokens_that_score_low_decay_fully():
    """A query that is constant and a key that is large and negative only for [MASK], on the RoPE pair that
    barely rotates: the masked copy's masked keys get no attention, the clean input's get their share."""
    model = one_layer(attention_bias=True, rope_theta=1e12)
    attention = model.model.layers[0].self_attn
    with torch.no_grad():
        for projection in (attention.q_proj, attention.k_proj):
            projection.weight.zero_()
            projection.bias.zero_()
        head_dim = 8
        attention.q_proj.bias[3::head_dim] = 1.0  # dim 3 of every head: the lowest RoPE frequency
        model.model.embed_tokens.weight[:, 0] = 0.0
        model.model.embed_tokens.weight[MASK, 0] = 5.0  # only [MASK] carries feature 0 ...
        attention.k_proj.weight[3::head_dim, 0] = -200.0  # ... which becomes a very negative key
    result = analyse(model, [probe()], mask_token_id=MASK, mask_ratio=0.3)
    assert result["average"]["score_decay"] == pytest.approx(1.0, abs=1e-3)
    assert result["average"]["segment_mass"]["answer"] > 0


def test_run_writes_json_and_plots_for_several_models(tiny_model_dir, tmp_path, builtin_prose):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from meap.tokens import add_mask_token

    with_mask = tmp_path / "with-mask"
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    from meap.data.builtin import builtin_documents

    add_mask_token(tokenizer, model)
    model.save_pretrained(with_mask)
    tokenizer.save_pretrained(with_mask)
    prose = tmp_path / "prose.txt"  # a slice of the built-in prose: all of it takes ~20 s to read
    prose.write_text("\n\n".join(text[:20_000] for text in islice(builtin_documents(), 2)), encoding="utf-8")
    summary = evaluate(
        AttentionConfig(
            model=[str(tiny_model_dir), str(with_mask)],
            output=str(tmp_path / "out"),
            samples=2,
            length=96,
            haystack=[str(prose)],
            no_progress=True,
        )
    )
    saved = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    plain, masked = saved["models"][str(tiny_model_dir)], saved["models"][str(with_mask)]
    assert plain["has_mask_token"] is False and "score_decay" not in plain["average"]
    assert masked["has_mask_token"] is True and "score_decay" in masked["layers"][0]
    for result in (plain, masked):
        assert result["samples"] == 2
        assert sum(result["average"]["segment_mass"].values()) == pytest.approx(1.0, abs=1e-4)
        spread = result["average"]["segment_mass_half_width"]  # over the 2 probes: the figure's error bars
        assert set(spread) == set(result["average"]["segment_mass"]) and all(value >= 0 for value in spread.values())
    assert (tmp_path / "out" / "segment_mass.png").stat().st_size > 0 and (tmp_path / "out" / "layers.png").is_file()


def test_probes_have_exact_segments(gpt2_tokenizer, builtin_prose):
    from meap.data.builtin import builtin_documents

    text = next(iter(builtin_documents()))[:20000]
    for example in build_probes(gpt2_tokenizer, text, length=300, samples=3, seed=1):
        bounds = example["bounds"]
        assert len(example["input_ids"]) == 300 == bounds["query"][1]
        answer = gpt2_tokenizer.decode(example["input_ids"][slice(*bounds["answer"])])
        assert example["answer"] in answer and "special magic number" in answer
        assert gpt2_tokenizer.decode(example["input_ids"][slice(*bounds["query"])]).strip().startswith("Question:")


def test_an_ntp_run_gets_no_masked_pass_its_mask_row_was_never_trained(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from meap.rundir import RunDir
    from meap.tokens import add_mask_token

    runs = {}
    for objective in ("ntp", "meap"):  # both runs' vocabularies hold [MASK], as every meap pretrain run's does
        directory = RunDir(tmp_path / objective)
        model, tokenizer = (
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            AutoTokenizer.from_pretrained(tiny_model_dir),
        )
        add_mask_token(tokenizer, model)
        model.save_pretrained(directory.final_dir)
        tokenizer.save_pretrained(directory.final_dir)
        directory.config_file.write_text(f"objective: {objective}\n")
        runs[objective] = str(directory.root)
    haystack = tmp_path / "hay.txt"
    haystack.write_text("The river ran past the old mill and on to the sea. " * 40)
    summary = evaluate(
        AttentionConfig(
            model=[runs["ntp"], f"{runs['meap']}/final"],
            output=str(tmp_path / "out"),
            samples=1,
            length=96,
            haystack=[str(haystack)],
            no_progress=True,
        )
    )
    ntp, meap = summary["models"][runs["ntp"]], summary["models"][f"{runs['meap']}/final"]
    assert ntp["has_mask_token"] and not ntp["masked_pass"] and ntp["objective"] == "ntp"
    assert "score_decay" not in ntp["average"] and "score_decay" not in ntp["layers"][0]
    assert meap["masked_pass"] and meap["objective"] == "meap" and "score_decay" in meap["layers"][0]


def test_the_masked_copy_is_drawn_as_training_draws_masks():
    """X_M hides the training ratio of the haystack (masking.mask_inputs, exact count), never the needle
    nor the query."""
    from meap.eval.attention import _masked
    from meap.masking import mask_inputs

    ids = torch.arange(100, 160)[None]
    bounds = {"answer": (20, 26), "query": (50, 60)}
    masked_ids, hidden = _masked(ids, bounds, 0.15, MASK, torch.Generator().manual_seed(3))
    assert hidden.shape == (50,) and int(hidden.sum()) == round(0.15 * 44)
    assert not hidden[20:26].any() and (masked_ids[0, 50:] == ids[0, 50:]).all()
    assert (masked_ids[0, :50][hidden] == MASK).all() and (masked_ids[0, :50][~hidden] == ids[0, :50][~hidden]).all()
    eligible = torch.zeros(ids.shape, dtype=torch.bool)
    eligible[0, :50] = True
    eligible[0, 20:26] = False
    _, expected = mask_inputs(ids, 0.15, MASK, eligible=eligible, generator=torch.Generator().manual_seed(3))
    assert torch.equal(hidden, expected[0, :50])
