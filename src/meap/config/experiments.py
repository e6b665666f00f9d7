"""The paired experiments' configs: ``meap demo`` (pretraining) and ``meap demo-sft`` (fine-tuning), each
the config of its training command plus what the pairing and the evaluations need."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meap.config.loading import help_field, new_default
from meap.config.training import PretrainConfig, SFTConfig
from meap.constants import DTYPES, OBJECTIVES


class PairedExperiment:
    """What the two experiments share: ``objective`` lists the objectives to pair, ``seeds`` the training
    seeds (each trains every objective), and both are checked alike."""

    def objectives(self) -> list[str]:
        return [name.strip() for name in self.objective.split(",") if name.strip()]

    def training_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def resolved_output(self) -> Path:
        return Path(self.output or f"runs/{self.command}")

    def pairing_problems(self) -> list[str]:
        found, objectives = [], self.objectives()
        if not objectives or any(name not in OBJECTIVES for name in objectives) or len(set(objectives)) < len(objectives):
            found.append(f"objective: expected distinct names from `ntp`, `meap`, comma-separated, got {self.objective!r}")
        if len(set(self.seeds)) < len(self.seeds) or any(not 0 <= seed < 2**32 for seed in self.seeds):
            found.append(f"seeds: expected distinct integers in [0, 2**32), got {self.seeds}")
        return found


@dataclass
class DemoConfig(PairedExperiment, PretrainConfig):
    """A paired experiment: the same pretraining run once per objective and seed, then NIAH, MDQA, attention,
    a report per seed and the paired comparison over all seeds.

    The training keys are :class:`PretrainConfig`'s; ``objective`` lists the objectives to pair. With a
    copy warm-up (``copy_warmup_steps`` > 0) each run first trains on copy drills at a short length and
    the main run continues from that model (see :mod:`meap.demo` for why).
    """

    objective: str = help_field("objectives to train and compare, comma-separated", default="ntp,meap")
    output: str = help_field("demo directory (default: runs/demo)", default="")
    seed: int = help_field("seeds the demo corpus and the evaluation items (shared by every training seed), and "
                      "training when `seeds` is empty", default=1337)
    seeds: list[int] = help_field("training seeds (model init, data order, masks); each seed trains every objective. "
                             "Empty: `seed` alone", default_factory=list)
    summary: str = help_field("also write the summary JSON to this file (e.g. results/evidence-cpu.json), and its "
                         "tables beside it (.md)", default="")
    data: str = help_field("`demo`: the demo corpus built in the output directory, or a prepared data directory "
                      "(`meap prepare`)", default="demo")
    # The demo corpus (data: demo); `seed` seeds it and the evaluation items, shared by every training seed
    vocab_size: int = help_field("BPE vocabulary trained on the demo corpus", default=2048)
    split_digits: bool = help_field("one BPE token per digit; false merges digits into multi-digit tokens, which a "
                               "small model copies far sooner (BENCHMARKS.md)", default=False)
    prose_documents: int = help_field("prose passages from the built-in corpus", default=0)
    retrieval_documents: int = help_field("documents in the NIAH prompt format: random values stated in prose under "
                                     "keys, one of them asked for at the end", default=10000)
    needles_per_document: list[int] = help_field("fewest and most needles (distinct keys) in a retrieval document",
                                            default_factory=lambda: [1, 2])
    quote_answers: bool = help_field("retrieval and MDQA documents answer by quoting the sentence that states the fact "
                                "(as the paper's NIAH scoring expects); false: the bare value", default=True)
    mdqa_documents: int = help_field("documents in the multi-document QA prompt format, with their answers",
                                default=2000)
    mdqa_passage_words: int = help_field("words per MDQA document (training and evaluation)", default=40)
    drill_documents: int = help_field("copy drills: a list of random numbers, then the same list again", default=8000)
    drill_numbers: list[int] = help_field("fewest and most numbers in a copy drill", default_factory=lambda: [2, 6])
    context_words: list[int] = help_field("fewest and most prose words around a retrieval document's needles",
                                     default_factory=lambda: [0, 40])
    # The copy warm-up
    copy_warmup_steps: int = help_field("optimizer steps on copy drills alone at copy_warmup_seq_len before the main "
                                   "run (0: none)", default=1000)
    copy_warmup_seq_len: int = help_field("sequence length of the copy warm-up", default=64)
    copy_warmup_batch_size: int = help_field("sequences per step in the copy warm-up", default=32)
    copy_warmup_documents: int = help_field("copy drills in the warm-up corpus", default=20000)
    copy_warmup_numbers: list[int] = help_field("fewest and most numbers in a warm-up drill",
                                           default_factory=lambda: [2, 4])
    # Evaluation
    niah_lengths: list[int] = help_field("NIAH context lengths in tokens", default_factory=lambda: [128, 192, 256])
    niah_depths: list[float] = help_field("NIAH needle depths in percent", default_factory=lambda: [0.0, 25.0, 50.0, 75.0, 100.0])
    niah_samples: int = help_field("NIAH samples per (length, depth) cell", default=8)
    key_check: bool = help_field("also run NIAH with a distractor needle under another key, and with only the "
                            "distractor (the asked key absent): is retrieval key-based?", default=True)
    max_new_tokens: int = help_field("tokens generated per NIAH and MDQA answer", default=24)
    mdqa_num_docs: int = help_field("documents per MDQA question", default=3)
    mdqa_examples: int = help_field("MDQA questions per gold position", default=20)
    attention_samples: int = help_field("probes for the attention analysis", default=16)
    attention_length: int = help_field("attention probe length in tokens", default=192)
    # Training (PretrainConfig's keys; defaults sized for 2 CPU cores)
    model: str = new_default(PretrainConfig, "model", default="tiny-2l")
    seq_len: int = new_default(PretrainConfig, "seq_len", default=256)
    document_attention: bool = new_default(PretrainConfig, "document_attention", default=True)
    micro_batch_size: int = new_default(PretrainConfig, "micro_batch_size", default=8)
    max_steps: int = help_field("optimizer steps per objective (after the copy warm-up)", default=1000)
    lr: float = new_default(PretrainConfig, "lr", default=3e-3)
    min_lr: float = new_default(PretrainConfig, "min_lr", default=3e-4)
    warmup_steps: int = new_default(PretrainConfig, "warmup_steps", default=100)
    eval_every: int = new_default(PretrainConfig, "eval_every", default=250)
    save_every: int = new_default(PretrainConfig, "save_every", default=500)

    command = "demo"

    def problems(self) -> list[str]:
        found = PretrainConfig.problems(dataclasses.replace(self, objective="meap")) + self.pairing_problems()
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
class SFTDemoConfig(PairedExperiment, SFTConfig):
    """A paired fine-tuning experiment: NTP-SFT and MEAP-SFT of one model per seed at equal training tokens,
    multi-document QA of the base model and of every fine-tuned one, and the paired comparison."""

    objective: str = help_field("objectives to fine-tune and compare, comma-separated", default="ntp,meap")
    output: str = help_field("demo directory (default: runs/demo-sft)", default="")
    seeds: list[int] = help_field("fine-tuning seeds (data order, masks, LoRA init); empty: `seed` alone",
                             default_factory=list)
    summary: str = help_field("also write the summary JSON to this file, and its tables beside it (.md)", default="")
    ntp_epochs: int = help_field("epochs of NTP-SFT", default=4)
    meap_epochs: int = help_field("epochs of MEAP-SFT (the paper: half NTP's, as each long example is doubled)",
                             default=2)
    mdqa_num_docs: int = help_field("documents per MDQA question", default=10)
    mdqa_gold_positions: list[int] = help_field("gold-document positions evaluated (0-based)",
                                           default_factory=lambda: [0, 4, 9])
    mdqa_examples: int = help_field("MDQA questions per gold position", default=30)
    mdqa_passage_words: int = help_field("words per MDQA document", default=40)
    max_new_tokens: int = help_field("tokens generated per MDQA answer", default=24)
    eval_dtype: str = help_field("precision of the MDQA evaluation (`auto`, `float32`, `bfloat16`)", default="auto")

    command = "demo-sft"

    def problems(self) -> list[str]:
        found = SFTConfig.problems(dataclasses.replace(self, objective="meap")) + self.pairing_problems()
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
