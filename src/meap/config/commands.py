"""The configs of the commands that neither train nor evaluate (``meap prepare``, ``meap data make-mdqa``,
``meap generate``, ``meap compare``), and the options every evaluation kind's config is built from (each kind
declares its config in its own module, :mod:`meap.eval`). Their defaults live here and only here: the library
functions behind the commands take theirs from these, and the CLI's flags (and their help) are generated from
the fields, as for the training commands.

``cli`` metadata says how a field looks on the command line: ``metavar``, ``short`` (``-o``), ``required``,
``positional``, ``comma`` (one comma-separated value instead of several), ``switch`` (a flag without a
value) and ``exclusive`` (a group of flags of which one at most is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meap.config.loading import help_field
from meap.constants import MDQA_DISTRACTORS

HAYSTACK = ("builtin",)
MODEL_HELP = "a Hugging Face model directory, a hub id (org/name), a meap run directory, or `smollm2-135m`"
DTYPE_HELP = "weights' precision: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16 (CUDA)"


def option(text: str, default: Any = None, *, factory=None, **cli: Any) -> Any:
    """A config field with its help text, its default (``factory``: a list's) and its command-line form."""
    kwargs = {"default_factory": factory} if factory is not None else {"default": default}
    return help_field(text, **kwargs, cli=cli)


def model_option(**cli: Any) -> Any:
    return option(MODEL_HELP, "", required=True, metavar="MODEL", **cli)


def output_option(text: str, metavar: str = "DIR") -> Any:
    return option(text, "", short="-o", required=True, metavar=metavar)


def haystack_option(text: str) -> Any:
    return option(text, factory=lambda: list(HAYSTACK), metavar="FILE")


def batch_size_option() -> Any:
    return option("prompts per forward pass", 8)


def dtype_option() -> Any:
    return option(DTYPE_HELP, "auto", metavar="DTYPE")


def no_progress_option(text: str = "no progress bar (none either when stderr is not a terminal)") -> Any:
    return option(text, False, switch=True)


class CommandConfig:
    """A command's config. ``problems`` states what the config alone shows wrong (keys that go together, ranges);
    what needs the data or the model to judge is checked where it is used (the library functions' own one-line
    errors). ``load_config`` asks every config, and each library entry point asks the config it is given."""

    def problems(self) -> list[str]:
        return []


@dataclass
class GenerationOptions(CommandConfig):
    """Flags every generating evaluation has; they come last in its help."""

    batch_size: int = batch_size_option()
    max_new_tokens: int = option("longest answer generated", 32)
    dtype: str = dtype_option()
    no_progress: bool = no_progress_option()

    def problems(self) -> list[str]:
        return [
            f"{name} must be at least 1, got {value}"
            for name, value in (("batch_size", self.batch_size), ("max_new_tokens", self.max_new_tokens))
            if value < 1
        ]


@dataclass
class PrepareConfig(CommandConfig):
    inputs: list[str] = option(
        "text files (each file is one document), directories, globs, JSONL/JSON (one document "
        "per record), Parquet, a saved `datasets` dataset, `hf:NAME` (a hub dataset id or a "
        "directory laid out as one, through datasets.load_dataset), or `builtin`",
        factory=list,
        positional=True,
        metavar="INPUT",
    )
    output: str = output_option("directory to write the shards into")
    tokenizer: str | None = option(
        "a Hugging Face tokenizer or model directory, a hub id (org/name), a meap run "
        "directory, `gpt2` (packaged; the default) or `smollm2-135m` (packaged): the "
        "tokenizer of the model to train",
        exclusive="source",
        metavar="TOKENIZER",
    )
    train_tokenizer: int | None = option(
        "train a byte-level BPE of this many tokens on the corpus", exclusive="source", metavar="VOCAB_SIZE"
    )
    merge_digits: bool = option(
        "with --train-tokenizer: let numbers merge into multi-digit tokens (GPT-2's way) "
        "instead of one token per digit",
        False,
        switch=True,
    )
    text_field: str = option("field holding the text in JSONL/JSON/Parquet/datasets", "text", metavar="KEY")
    val_fraction: float = option(
        "share of the corpus held out for validation (a small corpus holds out at least "
        "~8,192 tokens, at most a tenth)",
        0.005,
        metavar="FRACTION",
    )
    num_proc: int | None = option("tokeniser processes (default: CPUs, at most 8)")
    overwrite: bool = option("replace an existing prepared directory", False, switch=True)
    no_progress: bool = no_progress_option()
    split: str = option("with an `hf:NAME` input: the split to read", "train", metavar="NAME")
    config_name: str | None = option("with an `hf:NAME` input: the dataset's configuration", metavar="NAME")
    streaming: bool = option(
        "with an `hf:NAME` input: stream it (corpora larger than memory or disk)", False, switch=True
    )
    skip_bad_lines: bool = option(
        "pass over JSONL lines that are not JSON objects with the text field (counted "
        "and reported) instead of stopping at the first",
        False,
        switch=True,
    )

    def problems(self) -> list[str]:
        found = []
        if self.tokenizer is not None and self.train_tokenizer is not None:
            found.append("pass either tokenizer or train_tokenizer, not both")
        if self.merge_digits and self.train_tokenizer is None:
            found.append("--merge-digits: only with --train-tokenizer (a given tokenizer keeps its own rules)")
        if not 0 < self.val_fraction < 0.5:
            found.append(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.num_proc is not None and self.num_proc < 1:
            found.append(f"num_proc must be at least 1, got {self.num_proc}")
        return found


@dataclass
class MakeMDQAConfig(CommandConfig):
    output: str = output_option("file to write (.jsonl.gz is gzipped)", metavar="FILE")
    num_docs: int = option("documents per question", 20)
    gold_position: int = option("0-based position of the gold document", 0)
    passage_words: int = option("words per document (NQ-Open's are about 100)", 100)
    examples: int = option("questions to write", 100)
    seed: int = option("seed of the passages and the questions", 0)
    distractors: str = option(
        "hard: every distractor document holds a fact of the gold fact's shape about other "
        "names (only the question's key finds the gold one); filler: distractors are prose "
        "only (a single-needle test)",
        "hard",
        metavar="KIND",
    )

    def problems(self) -> list[str]:
        found = [
            f"{name} must be at least 1, got {value}"
            for name, value in (
                ("num_docs", self.num_docs),
                ("examples", self.examples),
                ("passage_words", self.passage_words),
            )
            if value < 1
        ]
        if self.num_docs >= 1 and not 0 <= self.gold_position < self.num_docs:
            found.append(
                f"gold_position must be in [0, {self.num_docs}) for {self.num_docs} documents, got {self.gold_position}"
            )
        if self.distractors not in MDQA_DISTRACTORS:
            found.append(f"distractors: expected one of {', '.join(MDQA_DISTRACTORS)}, got {self.distractors!r}")
        return found


@dataclass
class GenerateConfig(CommandConfig):
    prompts: list[str] = option(
        "prompts to continue (a chat model gets each as one user turn)", factory=list, positional=True, metavar="PROMPT"
    )
    model: str = model_option()
    max_new_tokens: int = option("longest completion generated", 64)
    temperature: float = option("0 decodes greedily (the default); above 0 samples at this temperature", 0.0)
    top_k: int = option("with --temperature: sample from the k likeliest tokens only (0: all)", 0)
    top_p: float = option(
        "with --temperature: sample from the likeliest tokens holding this probability mass (nucleus sampling; 1: all)",
        1.0,
        metavar="MASS",
    )
    seed: int = option("seed of the sampling", 0)
    raw: bool = option("feed a chat model the prompt as it is, without its chat template", False, switch=True)
    dtype: str = dtype_option()

    def problems(self) -> list[str]:
        found = []
        if self.max_new_tokens < 1:
            found.append(f"--max-new-tokens: expected at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            found.append(f"--temperature: expected 0 (greedy) or more, got {self.temperature}")
        if self.top_k < 0:
            found.append(f"--top-k: expected 0 (all tokens) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            found.append(f"--top-p: expected a probability mass in (0, 1], got {self.top_p}")
        if self.temperature == 0 and (self.top_k or self.top_p < 1):
            found.append("--top-k/--top-p: only when sampling (give --temperature above 0)")
        if not all(prompt.strip() for prompt in self.prompts):
            found.append("PROMPT: an empty prompt leaves nothing to continue")
        return found


@dataclass
class CompareConfig(CommandConfig):
    runs: list[str] = option(
        "run directories (evaluation outputs inside them are found)", factory=list, positional=True, metavar="RUN"
    )
    output: str = output_option("directory for report.md, report.html and plots")
