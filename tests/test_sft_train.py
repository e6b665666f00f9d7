"""`meap sft` end to end on a tiny model and real files of each format: outputs, resume, the NTP baseline,
packing, LoRA."""

import json
import shutil
import warnings
from itertools import islice

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from meap.config import SFTConfig, load_config
from meap.errors import UserError
from meap.rundir import without_timing
from meap.train import sft
from meap.train.build_sft import build_sft_run

from conftest import read_metrics
from sft_cases import alpaca, config, messages, sharegpt, write


@pytest.fixture
def alpaca_file(tmp_path):
    return write(tmp_path / "alpaca.jsonl", [alpaca(i) for i in range(20)])


@pytest.mark.parametrize(
    "fmt,name,make",
    [("alpaca", "a.jsonl", alpaca), ("sharegpt", "s.json", sharegpt), ("messages", "m.parquet", messages)],
)
def test_each_format_trains_checkpoints_and_writes_a_loadable_model(tiny_model_dir, tmp_path, fmt, name, make):
    data = write(tmp_path / name, [make(i) for i in range(20)])
    run = sft(config(tiny_model_dir, [data], tmp_path / "run"), progress=False)

    facts = json.loads((run / "run.json").read_text())
    assert facts["conversations"] == {"train": 18, "val": 2, "skipped": 0}
    assert facts["max_steps"] == 9 and facts["rows"]["concat"] == 18  # one epoch of 18 in steps of 2
    assert facts["val_rows"] == {"concat": 2}
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, 10))
    assert [m["step"] for m in metrics if "val_loss" in m] == [4, 8, 9]
    assert all(m["tokens_per_s"] > 0 for m in metrics) and metrics[-1]["tokens"] > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-8", "step-9"]

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    mask_id = tokenizer.convert_tokens_to_ids("[MASK]")
    assert mask_id == len(tokenizer) - 1 and mask_id < model.get_input_embeddings().weight.shape[0]
    prompt = tokenizer("### Instruction:\nRecite sequence 3.\n\n### Response:\n", return_tensors="pt")
    assert model.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 4
    assert load_config(SFTConfig, run / "config.yaml").data == [str(data)]


@pytest.mark.parametrize("moment", ["during a step", "during a checkpoint write"])
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tiny_model_dir, alpaca_file, tmp_path, moment):
    from conftest import config_flags, sigkill

    full = sft(config(tiny_model_dir, [alpaca_file], tmp_path / "full", epochs=2), progress=False)
    run = tmp_path / "killed"
    killed = config(tiny_model_dir, [alpaca_file], run, epochs=2)
    flags = config_flags(killed)
    sigkill(["sft", "--no-progress", *flags], run / "checkpoints", moment, first_checkpoint="step-4")

    sft(killed, resume=True, progress=False)

    assert without_timing(read_metrics(run)) == without_timing(read_metrics(full))
    full_weights = AutoModelForCausalLM.from_pretrained(full / "final").state_dict()
    for name, tensor in AutoModelForCausalLM.from_pretrained(run / "final").state_dict().items():
        assert torch.equal(tensor, full_weights[name]), name


def test_ntp_baseline_sees_the_same_conversations_in_the_same_order(tiny_model_dir, alpaca_file, tmp_path):
    meap = build_sft_run(config(tiny_model_dir, [alpaca_file], tmp_path / "m", epochs=2), progress=False)
    ntp = build_sft_run(
        config(tiny_model_dir, [alpaca_file], tmp_path / "n", epochs=2, objective="ntp"), progress=False
    )
    assert meap.max_steps == ntp.max_steps == 18
    assert meap.trainer.train_dataset.items == ntp.trainer.train_dataset.items
    for name, tensor in meap.trainer.model.state_dict().items():
        assert torch.equal(tensor, ntp.trainer.model.state_dict()[name]), name
    mask_id = meap.tokenizer.convert_tokens_to_ids("[MASK]")
    for meap_batch, ntp_batch in islice(
        zip(meap.trainer.get_train_dataloader(), ntp.trainer.get_train_dataloader()), 4
    ):
        assert not (ntp_batch["input_ids"] == mask_id).any() and (meap_batch["input_ids"] == mask_id).any()
        for row in range(ntp_batch["input_ids"].shape[0]):
            n = int(ntp_batch["attention_mask"][row].sum())
            # MEAP's concat row starts with exactly the NTP row, labels included; the masked copy follows.
            assert torch.equal(meap_batch["input_ids"][row, :n], ntp_batch["input_ids"][row, :n])
            assert torch.equal(meap_batch["labels"][row, :n], ntp_batch["labels"][row, :n])
            assert int(meap_batch["attention_mask"][row].sum()) == 2 * n


def test_packing_trains_on_fewer_fuller_sequences(tiny_model_dir, alpaca_file, tmp_path):
    run = build_sft_run(config(tiny_model_dir, [alpaca_file], tmp_path / "p", packing=True), progress=False)
    batch = next(iter(run.trainer.get_train_dataloader()))
    assert batch["attention_mask"].dim() == 4 and "position_ids" in batch
    assert run.max_steps < 9 and batch["input_ids"].shape[1] <= 256
    out = sft(config(tiny_model_dir, [alpaca_file], tmp_path / "packed", packing=True), progress=False)
    assert (out / "final" / "config.json").is_file()


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_lora_writes_an_adapter_and_a_merged_model(gpt2_tokenizer, alpaca_file, tmp_path, tied):
    from conftest import tiny_llama

    tiny_model_dir = tmp_path / "base"
    tiny_llama(len(gpt2_tokenizer), hidden=16, tied=tied).save_pretrained(tiny_model_dir)
    gpt2_tokenizer.save_pretrained(tiny_model_dir)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run = sft(
            config(
                tiny_model_dir,
                [alpaca_file],
                tmp_path / "lora",
                lora_r=4,
                max_steps=3,
                eval_every=0,
                save_every=2,
                keep_checkpoints=0,
            ),
            progress=False,
        )
    assert not [str(w.message) for w in said if w.category in (UserWarning, FutureWarning)]  # no library noise
    assert (run / "adapter" / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(run / "final").state_dict()
    assert set(tuned) == set(base)  # merged: a plain model, no LoRA modules left
    changed = [
        name
        for name in base
        if name in tuned and tuned[name].shape == base[name].shape and not torch.equal(tuned[name], base[name])
    ]
    assert any("proj" in name for name in changed)
    mask_id = AutoTokenizer.from_pretrained(run / "final").convert_tokens_to_ids("[MASK]")
    embeddings = tuned["model.embed_tokens.weight"]
    assert embeddings.shape[0] == mask_id + 1
    # The new [MASK] row started as the mean of the others and is trained alongside the adapters.
    start = base["model.embed_tokens.weight"].mean(dim=0)
    assert not torch.allclose(embeddings[mask_id], start)
    torch.testing.assert_close(embeddings[:mask_id], base["model.embed_tokens.weight"])
    merged = AutoModelForCausalLM.from_pretrained(run / "final")
    # Tied: one matrix for input and output after the merge, the trained [MASK] row included.
    assert (merged.lm_head.weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()) == tied

    # The adapter (and each checkpoint's) holds LoRA weights and the one [MASK] row, no embedding matrix...
    from peft import PeftModel
    from safetensors import safe_open

    for directory in [run / "adapter", *sorted((run / "checkpoints").glob("step-*"))]:
        with safe_open(directory / "adapter_model.safetensors", "pt") as weights:
            shapes = {name: weights.get_slice(name).get_shape() for name in weights.keys()}
        assert not [name for name, shape in shapes.items() if len(embeddings) in shape], (directory, shapes)
        assert any("trainable_tokens" in name for name in shapes) and any("lora_A" in name for name in shapes)
    # ...and on the base model grown by the [MASK] row it gives what the merged final/ gives
    grown = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    grown.resize_token_embeddings(mask_id + 1)
    adapted = PeftModel.from_pretrained(grown, run / "adapter").eval()
    ids = torch.tensor([[5, 17, mask_id, 99, 3]])
    torch.testing.assert_close(adapted(ids).logits, merged.eval()(ids).logits, rtol=1e-4, atol=1e-5)


def test_the_command_fine_tunes_on_the_builtin_set(tiny_model_dir, tmp_path, builtin_prose):
    import subprocess
    import sys

    def sft(output, *options):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "meap.cli",
                "sft",
                "--model",
                str(tiny_model_dir),
                "--data",
                "builtin:12",
                "--max-steps",
                "2",
                "--micro-batch-size",
                "2",
                "--max-length",
                "512",
                "--output",
                str(output),
                "--no-progress",
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    # Built-in conversations take ~350 tokens, so original + copy do not fit this model's 512 positions: a MEAP
    # run would be plain NTP, and is refused, saying what fits; nothing is left behind.
    refused = sft(tmp_path / "meap")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "no conversation gets the masked copy: 11 are too long" in refused.stderr  # 1 of 12 validates
    needed = int(refused.stderr.split("--max-length ")[1].split(" ")[0])
    assert 512 < needed < 1100 and not (tmp_path / "meap" / "final").exists()
    output = tmp_path / "run"
    result = sft(output, "--objective", "ntp")
    assert result.returncode == 0, result.stderr
    assert f"done: {output / 'final'}" in result.stdout
    facts = json.loads((output / "run.json").read_text())
    assert facts["max_steps"] == 2 and facts["meap_share"] is None
    assert facts["conversations"] == {"train": 11, "val": 1, "skipped": 0}
    assert facts["rows"] == {"ntp": 11} and facts["val_rows"] == {"ntp": 1}  # counted apart
    assert load_config(SFTConfig, output / "config.yaml").data == ["builtin:12"]


def test_a_meap_run_in_which_few_conversations_get_the_copy_says_so_loudly(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    data = tmp_path / "mixed.jsonl"
    long_answer = " ".join(["word"] * 80)
    data.write_text(
        "".join(
            json.dumps({"instruction": f"Say {i}.", "output": long_answer if i < 2 else "Yes."}) + "\n"
            for i in range(8)
        )
    )
    output = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meap.cli",
            "sft",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--max-steps",
            "1",
            "--micro-batch-size",
            "2",
            "--max-length",
            "512",
            "--val-fraction",
            "0",
            "--output",
            str(output),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: only 25% of the conversations get MEAP's masked copy" in result.stderr
    assert "6 have answers of 50 tokens or fewer" in result.stderr
    assert json.loads((output / "run.json").read_text())["meap_share"] == 0.25
    assert result.stdout.rstrip().endswith("(MEAP's masked copy in 25% of the conversations)")


def test_fine_tuning_a_meap_pretrain_run(prepared, tmp_path, alpaca_file):
    """A `meap pretrain` output (its tokenizer already has [MASK], no chat template) is a valid --model."""
    from meap.config import PretrainConfig
    from meap.train import pretrain

    base = pretrain(
        load_config(
            PretrainConfig,
            overrides=dict(
                data=str(prepared),
                output=str(tmp_path / "base"),
                seq_len=32,
                micro_batch_size=4,
                max_steps=2,
                eval_every=0,
            ),
        ),
        progress=False,
    )
    run = sft(config(base, [alpaca_file], tmp_path / "sft", max_steps=2, eval_every=0), progress=False)
    before = AutoTokenizer.from_pretrained(base / "final")
    after = AutoTokenizer.from_pretrained(run / "final")
    assert len(after) == len(before)  # [MASK] was reused, not added again
    assert after.convert_tokens_to_ids("[MASK]") == before.convert_tokens_to_ids("[MASK]")
    assert (
        AutoModelForCausalLM.from_pretrained(run / "final").config.vocab_size
        == AutoModelForCausalLM.from_pretrained(base / "final").config.vocab_size
    )


def test_resume_refuses_a_model_whose_tokenizer_changed(gpt2_tokenizer, alpaca_file, tmp_path):
    from meap.errors import UserError

    from conftest import tiny_llama

    model_dir = tmp_path / "padded"  # spare embedding rows, as most released models have
    tiny_llama(len(gpt2_tokenizer) + 63, hidden=16).save_pretrained(model_dir)
    gpt2_tokenizer.save_pretrained(model_dir)
    run = sft(config(model_dir, [alpaca_file], tmp_path / "run", max_steps=4, save_every=2), progress=False)
    assert len(json.loads((run / "run.json").read_text())["tokenizer_sha256"]) == 64
    shutil.rmtree(run / "final")
    gpt2_tokenizer.add_tokens(["<|tool|>"])  # the model directory now holds another vocabulary
    gpt2_tokenizer.save_pretrained(model_dir)
    with pytest.raises(UserError, match=f"the run was trained with another tokenizer than {model_dir} has now"):
        sft(config(model_dir, [alpaca_file], run, max_steps=4, save_every=2), resume=True, progress=False)


def test_trl_prompt_completion_files_and_skipping_bad_records(tiny_model_dir, tmp_path):
    """TRL's prompt/completion format (plain and conversational) reads as conversations; with
    --skip-bad-lines true, malformed and incomplete records are passed over, counted and the first named."""
    import subprocess
    import sys

    from meap.sft.formats import read_conversations

    data = tmp_path / "pc.jsonl"
    data.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "Name a colour.", "completion": "Blue."}),
                json.dumps(
                    {
                        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
                        "completion": [{"role": "assistant", "content": "Hello."}],
                    }
                ),
                '{"prompt": "broken',
                json.dumps({"prompt": "no completion"}),
                json.dumps({"prompt": "A number?", "completion": "Seven."}),
            ]
        )
        + "\n"
    )
    skipped: list[str] = []
    conversations = read_conversations([str(data)], None, skipped)
    assert conversations[0] == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]
    assert [t["role"] for t in conversations[1]] == ["system", "user", "assistant"] and len(conversations) == 3
    assert len(skipped) == 2 and skipped[0].startswith(f"{data}:3: malformed JSON")
    with pytest.raises(UserError, match=r"pc.jsonl:3: malformed JSON"):
        read_conversations([str(data)])
    output = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "meap.cli",
            "sft",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--skip-bad-lines",
            "true",
            "--max-steps",
            "1",
            "--micro-batch-size",
            "2",
            "--max-length",
            "256",
            "--val-fraction",
            "0",
            "--objective",
            "ntp",
            "--output",
            str(output),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "2 bad records skipped (--skip-bad-lines); the first: " in result.stderr
    assert json.loads((output / "run.json").read_text())["skipped_records"] == 2


def test_a_tied_checkpoint_loads_without_a_missing_keys_warning(tmp_path, caplog):
    """What resume loads: a checkpoint of tied embeddings stores the shared tensor once (no lm_head.weight)."""
    import logging

    from transformers import TrainingArguments

    from meap.train.trainer import MeapTrainer

    from conftest import tiny_llama

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    for tied in (True, False):
        model = tiny_llama(64, tied=tied)
        trainer = MeapTrainer(model=model, args=args)
        state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
        with caplog.at_level(logging.WARNING, logger="transformers.trainer"):
            caplog.clear()
            trainer._issue_warnings_after_load(model.load_state_dict(state, strict=False))
        warned = "missing keys" in caplog.text
        assert warned == (not tied), tied  # an untied model really lacks its output layer: that is still said
        assert model.lm_head.weight is model.model.embed_tokens.weight or not tied


def test_full_fine_tuning_of_a_small_set_warns_about_forgetting(tiny_model_dir, alpaca_file, tmp_path, capsys):
    said = {}
    for name, overrides in (("full", {}), ("lora", {"lora_r": 4}), ("gentle", {"lr": 1e-5})):
        sft(config(tiny_model_dir, [alpaca_file], tmp_path / name, max_steps=4, **overrides), progress=False)
        said[name] = capsys.readouterr().err
    assert "full fine-tuning of 18 conversations for 4 steps at lr 0.001 (lr x steps 4.0e-03)" in said["full"]
    assert "--lora-r 8" in said["full"]
    assert not any("can overwrite what the model knew" in said[name] for name in ("lora", "gentle"))
