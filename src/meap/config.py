"""Typed run configurations: dataclass defaults < YAML file < command-line flags.

Every field has a ``help`` text (the CLI's help). Unknown keys and badly typed values are user errors
that name the file (or flag) and the key; related fields are checked together and all problems are
reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meap.data.sft import SFT_FORMATS
from meap.errors import UserError
from meap.masking import MASK_MODES, SFT_LAYOUTS


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def _new_default(base: type, name: str, **kwargs: Any) -> Any:
    """Field ``name`` of a subclass of ``base`` with another default and ``base``'s help text."""
    return _help(base.__dataclass_fields__[name].metadata["help"], **kwargs)


DTYPES = ("auto", "float32", "bfloat16", "float16")  # `auto`: bf16 on CUDA, float32 on CPU
REPORT_TO = ("tensorboard", "wandb", "mlflow", "none")


@dataclass
class TrainingConfig:
    """Keys every training run has: the objective, the shape of a step, the schedule, cadence and system.

    Subclasses add what they train on and redeclare fields whose defaults differ.
    """

    objective: str = _help("`meap` (masked inputs, clean next-token targets) or `ntp` (the baseline)", default="meap")
    mask_ratio: float = _help("fraction of eligible tokens replaced by [MASK] (MEAP only)", default=0.15)
    output: str = _help("run directory (default: runs/<command>-<objective>)", default="")
    seed: int = _help("seeds the model init, the data order and the masks", default=1337)
    # Shape of a step
    micro_batch_size: int = _help("sequences per device per forward pass", default=16)
    grad_accum_steps: int = _help("micro-batches accumulated into one optimizer step", default=1)
    max_steps: int = _help("optimizer steps to train for", default=240)
    # Optimizer and schedule (AdamW, linear warmup then cosine decay to min_lr)
    lr: float = _help("peak learning rate", default=2e-3)
    min_lr: float = _help("learning rate at the end of the cosine decay", default=2e-4)
    warmup_steps: int = _help("linear warmup steps", default=20)
    weight_decay: float = _help("AdamW weight decay", default=0.05)
    adam_beta1: float = _help("AdamW beta1", default=0.9)
    adam_beta2: float = _help("AdamW beta2", default=0.95)
    grad_clip: float = _help("clip the global gradient norm to this (0 disables)", default=1.0)
    # Cadence
    log_every: int = _help("optimizer steps between metrics.jsonl records", default=10)
    eval_every: int = _help("optimizer steps between validation losses (0 disables)", default=60)
    eval_batches: int = _help("micro-batches per validation", default=8)
    save_every: int = _help("optimizer steps between resumable checkpoints (0: only at the end)", default=100)
    keep_checkpoints: int = _help("most recent checkpoints kept (0 keeps all)", default=2)
    # System
    dtype: str = _help("`auto` (bf16 on CUDA, fp32 on CPU), `float32`, `bfloat16` or `float16`", default="auto")
    attn_implementation: str = _help("attention kernel passed to transformers (`sdpa`, `eager`, `flash_attention_2`)", default="sdpa")
    compile: bool = _help("torch.compile the model", default=False)
    fsdp: bool = _help("under torchrun: FSDP2 instead of DDP (parameters, gradients and optimizer state sharded, one "
                       "unit per decoder layer; checkpoints and the final model saved whole)", default=False)
    on_nan: str = _help("a NaN or infinite training loss: `stop` the run (the last checkpoint stays), or `skip` "
                        "that optimizer step and go on", default="stop")
    loss_chunk_size: int = _help("compute the loss from hidden states this many tokens at a time, never holding "
                                 "all logits (pretraining; 0: the model's own loss)", default=0)
    num_workers: int = _help("DataLoader worker processes", default=0)
    report_to: list[str] = _help("where metrics go besides metrics.jsonl: tensorboard (into the run's "
                                 "tensorboard/), wandb, mlflow (the Trainer's integrations; optional extras), or "
                                 "none", default_factory=lambda: ["tensorboard"])

    command = "train"  # names the default output directory

    def resolved_output(self) -> Path:
        return Path(self.output or f"runs/{self.command}-{self.objective}")

    def effective_mask_ratio(self) -> float:
        """The ratio the collator applies: the NTP baseline is MEAP at ratio 0."""
        return self.mask_ratio if self.objective == "meap" else 0.0

    def problems(self) -> list[str]:
        """Every inconsistent or out-of-range value, as `key: what is expected` lines."""
        found = []
        if self.objective not in ("meap", "ntp"):
            found.append(f"objective: expected `meap` or `ntp`, got {self.objective!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            found.append(f"mask_ratio: expected a value in [0, 1), got {self.mask_ratio}")
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
        for key in ("max_steps", "warmup_steps", "eval_every", "save_every", "keep_checkpoints", "num_workers",
                    "loss_chunk_size"):
            if getattr(self, key) < 0:
                found.append(f"{key}: expected an integer >= 0, got {getattr(self, key)}")
        if not (math.isfinite(self.lr) and math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr and self.lr > 0):
            found.append(f"lr, min_lr: expected finite 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                found.append(f"{key}: expected a value in [0, 1), got {getattr(self, key)}")
        for key in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                found.append(f"{key}: expected a finite value >= 0, got {getattr(self, key)}")
        return found


@dataclass
class PretrainConfig(TrainingConfig):
    """A pretraining run: packed blocks of a prepared corpus, a preset or local model, MEAP or NTP."""

    data: str = _help("prepared data directory (`meap prepare`), or `builtin` for the embedded corpus", default="builtin")
    model: str = _help("model preset (see `meap presets`); to continue pretraining, a local Hugging Face model "
                       "directory, a hub id (org/name), a meap run directory or `smollm2-135m`", default="tiny")
    model_config: str = _help("a config.json of any causal LM transformers knows (Llama, Qwen3, Mistral, Gemma, "
                              "GPT-NeoX, ...): a fresh model of that shape, its vocabulary sized from the data's "
                              "tokenizer (instead of --model)", default="")
    model_override: list[str] = _help("KEY=VALUE changes to the model's config, e.g. num_hidden_layers=8 "
                                      "rope_theta=500000 (a preset or --model-config)", default_factory=list)
    mask_mode: str = _help("`exact` count per row, `bernoulli` per token, or `reference` (the reference code's "
                           "shared masks)", default="exact")
    seq_len: int = _help("tokens per training sequence", default=256)
    document_attention: bool = _help("attention and positions restart at every document (EOS) of a packed "
                                     "sequence, as Llama 3 trains; false: documents of a sequence attend to "
                                     "each other", default=False)

    command = "pretrain"

    def problems(self) -> list[str]:
        found = super().problems()
        if self.mask_mode not in MASK_MODES:
            found.append(f"mask_mode: expected one of {', '.join(MASK_MODES)}, got {self.mask_mode!r}")
        for key in ("seq_len", "max_steps"):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        bad = [item for item in self.model_override if "=" not in item or not item.split("=", 1)[0].strip()]
        if bad:
            found.append(f"model_override: expected KEY=VALUE items, got {bad[0]!r}")
        return found


@dataclass
class SFTConfig(TrainingConfig):
    """A supervised fine-tuning run: instruction files, a local causal LM, MEAP-SFT or NTP-SFT."""

    data: list[str] = _help("instruction files (JSON, JSONL, Parquet), or `builtin[:N]` (the built-in instruction "
                            "set, also the default)",
                            default_factory=lambda: ["builtin"])
    format: str = _help("`alpaca`, `sharegpt` or `messages`; empty: detected from the first record", default="")
    model: str = _help("Hugging Face causal LM directory, a hub id (org/name), a meap run directory, or "
                       "`smollm2-135m` (packaged)",
                       default="smollm2-135m")
    mask_ratio: float = _help("fraction of answer tokens masked in the copy (MEAP only)", default=0.1)
    layout: str = _help("`concat` (the paper: original + masked copy in one row) or `separate` (two rows)",
                        default="concat")
    min_answer_tokens: int = _help("conversations with this many answer tokens or fewer train as plain NTP", default=50)
    max_length: int = _help("longest training row in tokens (and packed sequence length)", default=1024)
    epochs: int = _help("passes over the training conversations (used when max_steps is 0)", default=1)
    max_steps: int = _help("optimizer steps; 0: as many as `epochs` passes take", default=0)
    packing: bool = _help("pack several rows per sequence (attention isolated per row)", default=False)
    val_fraction: float = _help("share of conversations held out for the validation loss (NTP rows)", default=0.1)
    lora_r: int = _help("LoRA rank (peft); 0 trains every weight", default=0)
    lora_alpha: float = _help("LoRA scaling alpha", default=32.0)
    lora_dropout: float = _help("LoRA dropout", default=0.05)
    micro_batch_size: int = _help("conversations (packed: sequences) per device per forward pass", default=4)
    lr: float = _new_default(TrainingConfig, "lr", default=5e-5)
    min_lr: float = _new_default(TrainingConfig, "min_lr", default=0.0)
    warmup_steps: int = _new_default(TrainingConfig, "warmup_steps", default=5)
    weight_decay: float = _new_default(TrainingConfig, "weight_decay", default=0.0)
    adam_beta2: float = _new_default(TrainingConfig, "adam_beta2", default=0.999)
    eval_every: int = _new_default(TrainingConfig, "eval_every", default=20)
    save_every: int = _new_default(TrainingConfig, "save_every", default=50)

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


@dataclass
class DemoConfig(PretrainConfig):
    """A paired experiment: the same pretraining run once per objective and seed, then NIAH, MDQA, attention,
    a report per seed and the paired comparison over all seeds.

    The training keys are :class:`PretrainConfig`'s; ``objective`` lists the objectives to pair. With a
    copy warm-up (``copy_warmup_steps`` > 0) each run first trains on copy drills at a short length and
    the main run continues from that model (see :mod:`meap.demo` for why).
    """

    objective: str = _help("objectives to train and compare, comma-separated", default="ntp,meap")
    output: str = _help("demo directory (default: runs/demo)", default="")
    seed: int = _help("seeds the demo corpus and the evaluation items (shared by every training seed), and "
                      "training when `seeds` is empty", default=1337)
    seeds: list[int] = _help("training seeds (model init, data order, masks); each seed trains every objective. "
                             "Empty: `seed` alone", default_factory=list)
    summary: str = _help("also write the summary JSON to this file (e.g. results/evidence-cpu.json), and its "
                         "tables beside it (.md)", default="")
    data: str = _help("`demo`: the demo corpus built in the output directory, or a prepared data directory "
                      "(`meap prepare`)", default="demo")
    # The demo corpus (data: demo); `seed` seeds it and the evaluation items, shared by every training seed
    vocab_size: int = _help("BPE vocabulary trained on the demo corpus", default=2048)
    split_digits: bool = _help("one BPE token per digit; false merges digits into multi-digit tokens, which a "
                               "small model copies far sooner (BENCHMARKS.md)", default=False)
    prose_documents: int = _help("prose passages from the built-in corpus", default=0)
    retrieval_documents: int = _help("documents in the NIAH prompt format: random values stated in prose under "
                                     "keys, one of them asked for at the end", default=10000)
    needles_per_document: list[int] = _help("fewest and most needles (distinct keys) in a retrieval document",
                                            default_factory=lambda: [1, 2])
    quote_answers: bool = _help("retrieval and MDQA documents answer by quoting the sentence that states the fact "
                                "(as the paper's NIAH scoring expects); false: the bare value", default=True)
    mdqa_documents: int = _help("documents in the multi-document QA prompt format, with their answers",
                                default=2000)
    mdqa_passage_words: int = _help("words per MDQA document (training and evaluation)", default=40)
    drill_documents: int = _help("copy drills: a list of random numbers, then the same list again", default=8000)
    drill_numbers: list[int] = _help("fewest and most numbers in a copy drill", default_factory=lambda: [2, 6])
    context_words: list[int] = _help("fewest and most prose words around a retrieval document's needles",
                                     default_factory=lambda: [0, 40])
    # The copy warm-up
    copy_warmup_steps: int = _help("optimizer steps on copy drills alone at copy_warmup_seq_len before the main "
                                   "run (0: none)", default=1000)
    copy_warmup_seq_len: int = _help("sequence length of the copy warm-up", default=64)
    copy_warmup_batch_size: int = _help("sequences per step in the copy warm-up", default=32)
    copy_warmup_documents: int = _help("copy drills in the warm-up corpus", default=20000)
    copy_warmup_numbers: list[int] = _help("fewest and most numbers in a warm-up drill",
                                           default_factory=lambda: [2, 4])
    # Evaluation
    niah_lengths: list[int] = _help("NIAH context lengths in tokens", default_factory=lambda: [128, 192, 256])
    niah_depths: list[float] = _help("NIAH needle depths in percent", default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    niah_samples: int = _help("NIAH samples per (length, depth) cell", default=8)
    key_check: bool = _help("also run NIAH with a distractor needle under another key, and with only the "
                            "distractor (the asked key absent): is retrieval key-based?", default=True)
    max_new_tokens: int = _help("tokens generated per NIAH and MDQA answer", default=24)
    mdqa_num_docs: int = _help("documents per MDQA question", default=3)
    mdqa_examples: int = _help("MDQA questions per gold position", default=20)
    attention_samples: int = _help("probes for the attention analysis", default=16)
    attention_length: int = _help("attention probe length in tokens", default=192)
    # Training (PretrainConfig's keys; defaults sized for 2 CPU cores)
    model: str = _new_default(PretrainConfig, "model", default="tiny-2l")
    seq_len: int = _new_default(PretrainConfig, "seq_len", default=256)
    document_attention: bool = _new_default(PretrainConfig, "document_attention", default=True)
    micro_batch_size: int = _new_default(PretrainConfig, "micro_batch_size", default=8)
    max_steps: int = _help("optimizer steps per objective (after the copy warm-up)", default=1000)
    lr: float = _new_default(PretrainConfig, "lr", default=3e-3)
    min_lr: float = _new_default(PretrainConfig, "min_lr", default=3e-4)
    warmup_steps: int = _new_default(PretrainConfig, "warmup_steps", default=100)
    eval_every: int = _new_default(PretrainConfig, "eval_every", default=250)
    save_every: int = _new_default(PretrainConfig, "save_every", default=500)

    command = "demo"

    def objectives(self) -> list[str]:
        return [name.strip() for name in self.objective.split(",") if name.strip()]

    def training_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def resolved_output(self) -> Path:
        return Path(self.output or "runs/demo")

    def problems(self) -> list[str]:
        objectives = self.objectives()
        found = PretrainConfig.problems(dataclasses.replace(self, objective="meap"))  # objective is checked below
        if not objectives or any(name not in ("ntp", "meap") for name in objectives) or len(set(objectives)) < len(objectives):
            found.append(f"objective: expected distinct names from `ntp`, `meap`, comma-separated, got {self.objective!r}")
        if len(set(self.seeds)) < len(self.seeds) or any(not 0 <= seed < 2**32 for seed in self.seeds):
            found.append(f"seeds: expected distinct integers in [0, 2**32), got {self.seeds}")
        for key in ("vocab_size", "niah_samples", "mdqa_num_docs", "mdqa_examples", "attention_samples",
                    "attention_length", "max_new_tokens", "mdqa_passage_words", "copy_warmup_seq_len",
                    "copy_warmup_batch_size"):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        for key in ("prose_documents", "retrieval_documents", "mdqa_documents", "drill_documents",
                    "copy_warmup_steps", "copy_warmup_documents"):
            if getattr(self, key) < 0:
                found.append(f"{key}: expected an integer >= 0, got {getattr(self, key)}")
        ranges = {"context_words": 0, "needles_per_document": 1, "drill_numbers": 1, "copy_warmup_numbers": 1}
        for key, least in ranges.items():
            value = getattr(self, key)
            if len(value) != 2 or not least <= value[0] <= value[1]:
                found.append(f"{key}: expected [fewest, most] with {least} <= fewest <= most, got {value}")
        if self.copy_warmup_steps and not self.copy_warmup_documents:
            found.append("copy_warmup_documents: expected > 0 when copy_warmup_steps > 0")
        if not self.niah_lengths or any(length < 1 for length in self.niah_lengths):
            found.append(f"niah_lengths: expected positive lengths, got {self.niah_lengths}")
        if not self.niah_depths or any(not 0 <= depth <= 100 for depth in self.niah_depths):
            found.append(f"niah_depths: expected depths within [0, 100], got {self.niah_depths}")
        return found

    def pretrain_config(self, objective: str, data: str, output: Path, seed: int | None = None,
                        **overrides: Any) -> PretrainConfig:
        """The pretraining run of one objective and seed (``overrides``: other PretrainConfig keys)."""
        keys = {f.name for f in dataclasses.fields(PretrainConfig)}
        values = {key: getattr(self, key) for key in keys}
        return PretrainConfig(**{**values, "objective": objective, "data": data, "output": str(output),
                                 "seed": self.seed if seed is None else seed, **overrides})


@dataclass
class SFTDemoConfig(SFTConfig):
    """A paired fine-tuning experiment: NTP-SFT and MEAP-SFT of one model per seed at equal training tokens,
    multi-document QA of the base model and of every fine-tuned one, and the paired comparison."""

    objective: str = _help("objectives to fine-tune and compare, comma-separated", default="ntp,meap")
    output: str = _help("demo directory (default: runs/demo-sft)", default="")
    seeds: list[int] = _help("fine-tuning seeds (data order, masks, LoRA init); empty: `seed` alone",
                             default_factory=list)
    summary: str = _help("also write the summary JSON to this file, and its tables beside it (.md)", default="")
    ntp_epochs: int = _help("epochs of NTP-SFT", default=4)
    meap_epochs: int = _help("epochs of MEAP-SFT (the paper: half NTP's, as each long example is doubled)",
                             default=2)
    mdqa_num_docs: int = _help("documents per MDQA question", default=10)
    mdqa_gold_positions: list[int] = _help("gold-document positions evaluated (0-based)",
                                           default_factory=lambda: [0, 4, 9])
    mdqa_examples: int = _help("MDQA questions per gold position", default=30)
    mdqa_passage_words: int = _help("words per MDQA document", default=40)
    max_new_tokens: int = _help("tokens generated per MDQA answer", default=24)
    eval_dtype: str = _help("precision of the MDQA evaluation (`auto`, `float32`, `bfloat16`)", default="auto")

    command = "demo-sft"

    def objectives(self) -> list[str]:
        return [name.strip() for name in self.objective.split(",") if name.strip()]

    def training_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def resolved_output(self) -> Path:
        return Path(self.output or "runs/demo-sft")

    def problems(self) -> list[str]:
        objectives = self.objectives()
        found = SFTConfig.problems(dataclasses.replace(self, objective="meap"))
        if not objectives or any(name not in ("ntp", "meap") for name in objectives) or len(set(objectives)) < len(objectives):
            found.append(f"objective: expected distinct names from `ntp`, `meap`, comma-separated, got {self.objective!r}")
        if len(set(self.seeds)) < len(self.seeds) or any(not 0 <= seed < 2**32 for seed in self.seeds):
            found.append(f"seeds: expected distinct integers in [0, 2**32), got {self.seeds}")
        for key in ("ntp_epochs", "meap_epochs", "mdqa_num_docs", "mdqa_examples", "mdqa_passage_words",
                    "max_new_tokens"):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        positions = self.mdqa_gold_positions
        if not positions or len(set(positions)) < len(positions) or any(not 0 <= p < self.mdqa_num_docs for p in positions):
            found.append(f"mdqa_gold_positions: expected distinct positions in [0, {self.mdqa_num_docs}), got {positions}")
        if self.eval_dtype not in DTYPES:
            found.append(f"eval_dtype: expected {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got {self.eval_dtype!r}")
        return found

    def sft_config(self, objective: str, output: Path, seed: int) -> SFTConfig:
        """The fine-tuning run of one objective and seed."""
        keys = {f.name for f in dataclasses.fields(SFTConfig)}
        values = {key: getattr(self, key) for key in keys}
        epochs = self.meap_epochs if objective == "meap" else self.ntp_epochs
        return SFTConfig(**{**values, "objective": objective, "output": str(output), "seed": seed,
                            "epochs": epochs, "max_steps": 0})


def field_types(config_cls: type) -> dict[str, type]:
    """Field name -> its Python type (str, int, float, bool, or a list of str, int or float)."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _closest(key: str, known: list[str], as_flag: bool = False) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if not match:
        return ""
    return f" (did you mean `{_flag(match[0]) if as_flag else match[0]}`?)"


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def coerce(key: str, value: Any, expected: type, where: str) -> Any:
    """Convert a YAML value or a command-line string to the field's type, or raise a UserError."""
    if typing.get_origin(expected) is list:  # a YAML list, one value, or the values of an nargs="+" flag
        (item_type,) = typing.get_args(expected)
        items = value if isinstance(value, list) else [value]
        try:
            return [coerce(key, item, item_type, where) for item in items]
        except UserError:
            raise UserError(f"{where}: `{key}` expects a list of {item_type.__name__} values, got {value!r}") from None
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (str, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, expected):
        return value
    raise UserError(f"{where}: `{key}` expects {expected.__name__}, got {value!r}")


def unknown_option(key: str, config_cls: type) -> UserError:
    """The error for a command-line key that ``config_cls`` does not have, naming the closest one."""
    key = key.lstrip("-").split("=")[0].replace("-", "_")
    return UserError(f"unknown option {_flag(key)}{_closest(key, list(field_types(config_cls)), as_flag=True)}")


def load_config(config_cls: type, path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Build ``config_cls`` from its defaults, then a YAML file, then ``overrides`` (e.g. parsed flags)."""
    types_by_key = field_types(config_cls)
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_yaml(Path(path), types_by_key))
    for key, value in (overrides or {}).items():
        if key not in types_by_key:
            raise unknown_option(key, config_cls)
        values[key] = coerce(key, value, types_by_key[key], _flag(key))
    config = config_cls(**values)
    problems = config.problems()
    if problems:
        source = f"{path}: " if path is not None else ""
        raise UserError(source + "; ".join(problems))
    return config


def _read_yaml(path: Path, types_by_key: dict[str, type]) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of config keys to values, got {type(loaded).__name__}")
    values = {}
    for key, value in loaded.items():
        if key not in types_by_key:
            raise UserError(f"{path}: unknown key `{key}`{_closest(str(key), list(types_by_key))}")
        values[key] = coerce(key, value, types_by_key[key], str(path))
    return values


def saved_config(config_cls: type, path: Path) -> dict[str, Any]:
    """A saved config.yaml as a dict, keys added to ``config_cls`` since it was written at their defaults
    (so a run saved by an older meap still resumes)."""
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    defaults = config_to_dict(config_cls())
    return {**defaults, **saved} if isinstance(saved, dict) else saved


def config_to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
