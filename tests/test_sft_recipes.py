"""MEAP-SFT inside existing pipelines: TRL's SFTTrainer and a plain transformers.Trainer, with a tiny model.

These are the recipes README.md documents; each is a handful of lines in a user's script.
"""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from meap.sft.collator import MeapSFTCollator
from meap.sft.formats import read_conversations
from meap.sft.stream import SFTStream
from meap.sft.template import tokenize_conversation
from meap.tokens import add_mask_token

from conftest import tiny_llama

ANSWER = (
    "The lantern by the harbor burned all night, and the fishermen counted the boats as they came in "
    "one by one through the fog, until the last of them was safe against the stone wall."
)


def model_and_tokenizer(gpt2_tokenizer):
    tokenizer = gpt2_tokenizer
    tokenizer.pad_token = tokenizer.eos_token
    model = tiny_llama(len(tokenizer), hidden=16)
    mask_id = add_mask_token(tokenizer, model)  # [MASK] in the tokenizer, a mean-initialised row in the model
    return model, tokenizer, mask_id


def changed(model, before):
    return any(not torch.equal(p, before[n]) for n, p in model.state_dict().items())


def test_trl_sft_trainer_with_the_meap_collator(gpt2_tokenizer, tmp_path):
    trl = pytest.importorskip("trl")
    model, tokenizer, mask_id = model_and_tokenizer(gpt2_tokenizer)
    dataset = Dataset.from_list(
        [{"prompt": f"Question {i}: what did the lantern see?\n", "completion": ANSWER} for i in range(8)]
    )
    collator = MeapSFTCollator(
        mask_id, tokenizer.eos_token_id, tokenizer.pad_token_id, mask_ratio=0.1, min_answer_tokens=20, max_length=512
    )
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        # TRL trains in bf16 by default; torch 2.13's CPU bf16 attention kernel fails on some AVX-512 CPUs
        # ("pack_vnni2 is only supported when avx512 is supported"), and the collator is what is tested here
        bf16=False,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator
    )

    batch = next(iter(trainer.get_train_dataloader()))
    answer_tokens = len(tokenizer(ANSWER)["input_ids"]) + 1  # TRL ends the completion with EOS
    assert int((batch["input_ids"] == mask_id).sum()) == 2 * round(0.1 * (answer_tokens - 1))
    assert int((batch["labels"] != -100).sum()) == 2 * (answer_tokens + round(0.1 * (answer_tokens - 1)))
    before = {n: p.clone() for n, p in model.state_dict().items()}
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert changed(model, before)


def test_plain_trainer_with_the_meap_collator_and_a_stream(gpt2_tokenizer, tmp_path):
    model, tokenizer, mask_id = model_and_tokenizer(gpt2_tokenizer)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(f'{{"instruction": "Tell story {i}.", "output": "{ANSWER}"}}\n' for i in range(6)))
    conversations = [tokenize_conversation(tokenizer, turns) for turns in read_conversations([str(data)])]
    stream = SFTStream(conversations, epochs=2, seed=0)  # masks drawn anew in every epoch
    collator = MeapSFTCollator(
        mask_id, tokenizer.eos_token_id, mask_ratio=0.1, min_answer_tokens=20, max_length=512, seed=0
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=3,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        remove_unused_columns=False,
        logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=stream, data_collator=collator)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    trainer.train()
    assert trainer.state.global_step == 4 and changed(model, before)
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)
