"""The training commands' configs: the keys every run has (:class:`TrainingConfig`), then what
``meap pretrain`` (:class:`PretrainConfig`) and ``meap sft`` (:class:`SFTConfig`) train on.
Every field has a ``help`` text, which is also its command-line help."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meap.config.loading import help_field, key_values
from meap.constants import (
    DEFAULT_MASK_RATIO,
    DTYPES,
    MASK_MODES,
    OBJECTIVES,
    REPORT_TO,
    SFT_FORMATS,
    SFT_LAYOUTS,
    mask_ratio_problem,
)


@dataclass
class TrainingConfig:
    """Keys every training run has: the objective, the shape of a step, the schedule, cadence and system.

    Subclasses add what they train on; ``class X(TrainingConfig, defaults={key: value})`` gives keys other
    defaults (each keeps its help and its place).
    """

    def __init_subclass__(cls, defaults: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = cls.__dataclass_fields__  # the parent's, until @dataclass makes the subclass's own
        cls.__annotations__ = own = dict(cls.__dict__.get("__annotations__", {}))  # never the parent's dict
        for name, value in (defaults or {}).items():
            own[name] = inherited[name].type
            setattr(cls, name, field(default=value, metadata=inherited[name].metadata))

    objective: str = help_field(
        "`meap` (masked inputs, clean next-token targets) or `ntp` (the baseline)", default="meap"
    )
    mask_ratio: float = help_field(
        "fraction of eligible tokens replaced by [MASK] (MEAP only)", default=DEFAULT_MASK_RATIO
    )
    output: str = help_field("run directory (default: runs/<command>-<objective>)", {"short": "-o"}, default="")
    seed: int = help_field("seeds the model init, the data order and the masks", default=1337)
    # Shape of a step
    micro_batch_size: int = help_field("sequences per device per forward pass", default=16)
    grad_accum_steps: int = help_field("micro-batches accumulated into one optimizer step", default=1)
    max_steps: int = help_field("optimizer steps to train for", default=240)
    # Optimizer and schedule (AdamW, linear warmup then cosine decay to min_lr)
    lr: float = help_field("peak learning rate", default=2e-3)
    min_lr: float = help_field("learning rate at the end of the cosine decay", default=2e-4)
    warmup_steps: int = help_field("linear warmup steps", default=20)
    weight_decay: float = help_field("AdamW weight decay", default=0.05)
    adam_beta1: float = help_field("AdamW beta1", default=0.9)
    adam_beta2: float = help_field("AdamW beta2", default=0.95)
    grad_clip: float = help_field("clip the global gradient norm to this (0 disables)", default=1.0)
    # Cadence
    log_every: int = help_field("optimizer steps between metrics.jsonl records", default=10)
    eval_every: int = help_field("optimizer steps between validation losses (0 disables)", default=60)
    eval_batches: int = help_field("micro-batches per validation", default=8)
    save_every: int = help_field("optimizer steps between resumable checkpoints (0: only at the end)", default=100)
    keep_checkpoints: int = help_field("most recent checkpoints kept (0 keeps all)", default=2)
    probe_file: str = help_field(
        "JSONL of teacher-forced probes (`context`, `answer`, `distractors`) scored during "
        "training into metrics.jsonl as probe_accuracy, probe_choice, probe_answer_p, "
        "probe_distractor_p",
        default="",
    )
    probe_every: int = help_field(
        "optimizer steps between probe scores (and the last step); needs probe_file", default=0
    )
    # System
    dtype: str = help_field("`auto` (bf16 on CUDA, fp32 on CPU), `float32`, `bfloat16` or `float16`", default="auto")
    attn_implementation: str = help_field(
        "attention kernel passed to transformers (`sdpa`, `eager`, `flash_attention_2`)", default="sdpa"
    )
    compile: bool = help_field("torch.compile the model", default=False)
    fsdp: bool = help_field(
        "under torchrun: FSDP2 instead of DDP (parameters, gradients and optimizer state sharded, one "
        "unit per decoder layer; checkpoints and the final model saved whole)",
        default=False,
    )
    on_nan: str = help_field(
        "a NaN or infinite training loss: `stop` the run (the last checkpoint stays), or `skip` "
        "that optimizer step and go on",
        default="stop",
    )
    loss_chunk_size: int = help_field(
        "compute the loss from hidden states this many tokens at a time, never holding "
        "all logits (pretraining; 0: the model's own loss)",
        default=0,
    )
    num_workers: int = help_field("DataLoader worker processes", default=0)
    report_to: list[str] = help_field(
        "where metrics go besides metrics.jsonl: tensorboard (into the run's "
        "tensorboard/), wandb, mlflow (the Trainer's integrations; optional extras), or "
        "none",
        default_factory=lambda: ["tensorboard"],
    )
    trainer_args: list[str] = help_field(
        "KEY=VALUE items for transformers' TrainingArguments, any key meap does not set itself, e.g. "
        "gradient_checkpointing=true optim=adamw_torch lr_scheduler_type=constant",
        default_factory=list,
        cli={"alias": "--trainer-arg", "extend": True},
    )

    command = "train"  # names the default output directory

    def resolved_output(self) -> Path:
        return Path(self.output or f"runs/{self.command}-{self.objective}")

    def trainer_arguments(self) -> dict:
        """``trainer_args`` as TrainingArguments keys and values (checked against transformers when a run
        builds its arguments: :func:`meap.train.arguments.training_arguments`)."""
        return key_values("trainer_args", self.trainer_args)[0]

    @staticmethod
    def upgrade_saved(saved: dict) -> dict:
        """A config.yaml of an older meap, which saved an NTP run with the ratio it did not train at."""
        if saved.get("objective") == "ntp" and saved.get("mask_ratio"):
            return {**saved, "mask_ratio": 0.0}
        return saved

    def effective_mask_ratio(self) -> float:
        """The ratio the collator applies: the NTP baseline is MEAP at ratio 0."""
        return self.mask_ratio if self.objective == "meap" else 0.0

    def problems(self) -> list[str]:
        """Every inconsistent or out-of-range value, as `key: what is expected` lines."""
        found = []
        if self.objective not in OBJECTIVES:
            found.append(f"objective: expected `meap` or `ntp`, got {self.objective!r}")
        if problem := mask_ratio_problem(self.mask_ratio):
            found.append(f"mask_ratio: {problem}")
        none_with_others = "none" in self.report_to and len(self.report_to) > 1
        if any(name not in REPORT_TO for name in self.report_to) or none_with_others:
            found.append(f"report_to: expected names from {', '.join(REPORT_TO)} (`none` alone), got {self.report_to}")
        if self.on_nan not in ("stop", "skip"):
            found.append(f"on_nan: expected `stop` or `skip`, got {self.on_nan!r}")
        if self.dtype not in DTYPES:
            found.append(f"dtype: expected {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got {self.dtype!r}")
        if not 0 <= self.seed < 2**32:
            found.append(f"seed: expected an integer in [0, 2**32), got {self.seed}")
        for key in ("micro_batch_size", "grad_accum_steps", "log_every", "eval_batches"):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        for key in (
            "max_steps",
            "warmup_steps",
            "eval_every",
            "save_every",
            "keep_checkpoints",
            "num_workers",
            "loss_chunk_size",
            "probe_every",
        ):
            if getattr(self, key) < 0:
                found.append(f"{key}: expected an integer >= 0, got {getattr(self, key)}")
        if not (math.isfinite(self.lr) and math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr and self.lr > 0):
            found.append(
                f"lr, min_lr: expected finite 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}"
            )
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                found.append(f"{key}: expected a value in [0, 1), got {getattr(self, key)}")
        found += key_values("trainer_args", self.trainer_args)[1]
        if bool(self.probe_file) != bool(self.probe_every):
            found.append(
                "probe_file, probe_every: expected both (a probe file and how often to score it) or neither, "
                f"got probe_file={self.probe_file!r}, probe_every={self.probe_every}"
            )
        for key in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                found.append(f"{key}: expected a finite value >= 0, got {getattr(self, key)}")
        return found


@dataclass
class PretrainConfig(TrainingConfig):
    """A pretraining run: packed blocks of a prepared corpus, a preset or local model, MEAP or NTP."""

    data: str = help_field(
        "prepared data directory (`meap prepare`), or `builtin` for the embedded corpus", default="builtin"
    )
    model: str = help_field(
        "model preset (see `meap presets`); to continue pretraining, a local Hugging Face model "
        "directory, a hub id (org/name), a meap run directory or `smollm2-135m`",
        default="tiny",
    )
    model_config: str = help_field(
        "a config.json of any causal LM transformers knows (Llama, Qwen3, Mistral, Gemma, "
        "GPT-NeoX, ...): a fresh model of that shape, its vocabulary sized from the data's "
        "tokenizer (instead of --model)",
        default="",
    )
    model_override: list[str] = help_field(
        "KEY=VALUE changes to the model's config, e.g. num_hidden_layers=8 "
        "rope_theta=500000 (a preset or --model-config)",
        default_factory=list,
    )
    mask_mode: str = help_field(
        "`exact` count per row, `bernoulli` per token, or `reference` (the reference code's shared masks)",
        default="exact",
    )
    seq_len: int = help_field("tokens per training sequence", default=256)
    document_attention: bool = help_field(
        "attention and positions restart at every document (EOS) of a packed "
        "sequence, as Llama 3 trains; false: documents of a sequence attend to "
        "each other",
        default=False,
    )

    command = "pretrain"
    EXCLUSIVE = (("model", "model_config"),)

    def problems(self) -> list[str]:
        found = super().problems()
        if self.model_config and self.model != PretrainConfig.model:
            found.append(
                f"model_config: builds a fresh model of {self.model_config}, so model {self.model!r} would be "
                "ignored; give one of them"
            )
        if self.mask_mode not in MASK_MODES:
            found.append(f"mask_mode: expected one of {', '.join(MASK_MODES)}, got {self.mask_mode!r}")
        for key in ("seq_len", "max_steps"):
            if getattr(self, key) < 1:
                # pretraining has no epochs to stop at: this replaces the shared `>= 0`, one message per key
                found = [problem for problem in found if not problem.startswith(f"{key}:")]
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        found += key_values("model_override", self.model_override)[1]
        return found


# a fine-tune starts from a trained model: a smaller rate, no decay, and a shorter run's cadence
_SFT_DEFAULTS = dict(
    lr=5e-5, min_lr=0.0, warmup_steps=5, weight_decay=0.0, adam_beta2=0.999, eval_every=20, save_every=50
)


@dataclass
class SFTConfig(TrainingConfig, defaults=_SFT_DEFAULTS):
    """A supervised fine-tuning run: instruction files, a local causal LM, MEAP-SFT or NTP-SFT."""

    data: list[str] = help_field(
        "instruction files (JSON, JSONL, Parquet), or `builtin[:N]` (the built-in instruction set, also the default)",
        default_factory=lambda: ["builtin"],
    )
    format: str = help_field(
        "`alpaca`, `sharegpt`, `messages` or `prompt-completion` (TRL's); empty: detected from the first record",
        default="",
    )
    skip_bad_lines: bool = help_field(
        "pass over records that are not valid (malformed JSON, missing fields), counted "
        "in run.json and the first one named, instead of stopping",
        default=False,
    )
    model: str = help_field(
        "Hugging Face causal LM directory, a hub id (org/name), a meap run directory, or `smollm2-135m` (packaged)",
        default="smollm2-135m",
    )
    mask_ratio: float = help_field("fraction of answer tokens masked in the copy (MEAP only)", default=0.1)
    layout: str = help_field(
        "`concat` (the paper: original + masked copy in one row) or `separate` (two rows)", default="concat"
    )
    min_answer_tokens: int = help_field(
        "conversations with this many answer tokens or fewer train as plain NTP", default=50
    )
    max_length: int = help_field("longest training row in tokens (and packed sequence length)", default=1024)
    epochs: int = help_field("passes over the training conversations (used when max_steps is 0)", default=1)
    max_steps: int = help_field("optimizer steps; 0: as many as `epochs` passes take", default=0)
    packing: bool = help_field("pack several rows per sequence (attention isolated per row)", default=False)
    val_fraction: float = help_field("share of conversations held out for the validation loss (NTP rows)", default=0.1)
    lora_r: int = help_field("LoRA rank (peft); 0 trains every weight", default=0)
    lora_alpha: float = help_field("LoRA scaling alpha", default=32.0)
    lora_dropout: float = help_field("LoRA dropout", default=0.05)
    micro_batch_size: int = help_field("conversations (packed: sequences) per device per forward pass", default=4)

    command = "sft"

    def problems(self) -> list[str]:
        found = super().problems()
        if self.format not in ("", *SFT_FORMATS):
            found.append(f"format: expected {', '.join(SFT_FORMATS)} (or empty: detected), got {self.format!r}")
        if self.layout not in SFT_LAYOUTS:
            found.append(f"layout: expected one of {', '.join(SFT_LAYOUTS)}, got {self.layout!r}")
        for key in ("min_answer_tokens", "lora_r"):
            if getattr(self, key) < 0:
                found.append(f"{key}: expected an integer >= 0, got {getattr(self, key)}")
        if self.lora_r and self.fsdp:
            found.append("lora_r, fsdp: LoRA runs merge the adapter on one process; use DDP (no --fsdp) for LoRA")
        for key in ("max_length", "epochs"):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        if not 0.0 <= self.val_fraction < 1.0:
            found.append(f"val_fraction: expected a value in [0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            found.append(f"lora_alpha: expected a finite value > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            found.append(f"lora_dropout: expected a value in [0, 1), got {self.lora_dropout}")
        return found
