"""The configs of the commands that do not train: ``meap prepare``, ``meap eval niah|mdqa|retrieval|harness``,
``meap analyze attention``, ``meap data make-mdqa`` and ``meap compare``. Their defaults live here and only
here: the library functions behind the commands take theirs from these, and the CLI's flags (and their
help) are generated from the fields, as for the training commands.

``cli`` metadata says how a field looks on the command line: ``metavar``, ``short`` (``-o``), ``required``,
``positional``, ``comma`` (one comma-separated value instead of several), ``switch`` (a flag without a
value) and ``exclusive`` (a group of flags of which one at most is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meap.config.loading import help_field
from meap.constants import DEFAULT_MASK_RATIO, MDQA_DISTRACTORS, mask_ratio_problem

NIAH_LENGTHS = (512, 1024, 2048)
NIAH_DEPTHS = (0.0, 25.0, 50.0, 75.0, 100.0)
HAYSTACK = ("builtin",)
MODEL_HELP = "a Hugging Face model directory, a hub id (org/name), a meap run directory, or `smollm2-135m`"
DTYPE_HELP = "weights' precision: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16 (CUDA)"


def option(text: str, default: Any = None, *, factory=None, **cli: Any) -> Any:
    """A config field with its help text, its default (``factory``: a list's) and its command-line form."""
    kwargs = {"default_factory": factory} if factory is not None else {"default": default}
    return help_field(text, **kwargs, cli=cli)


def _model(**cli: Any) -> Any:
    return option(MODEL_HELP, "", required=True, metavar="MODEL", **cli)


def _output(text: str, metavar: str = "DIR") -> Any:
    return option(text, "", short="-o", required=True, metavar=metavar)


def _haystack(text: str) -> Any:
    return option(text, factory=lambda: list(HAYSTACK), metavar="FILE")


def _batch_size() -> Any:
    return option("prompts per forward pass", 8)


def _dtype() -> Any:
    return option(DTYPE_HELP, "auto", metavar="DTYPE")


def _no_progress(text: str = "no progress bar (none either when stderr is not a terminal)") -> Any:
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

    batch_size: int = _batch_size()
    max_new_tokens: int = option("longest answer generated", 32)
    dtype: str = _dtype()
    no_progress: bool = _no_progress()

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
    output: str = _output("directory to write the shards into")
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
    no_progress: bool = _no_progress()
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
class NIAHConfig(GenerationOptions):
    model: str = _model()
    output: str = _output("directory for results.jsonl, summary.json, heatmap.png")
    haystack: list[str] = _haystack(
        "files, directories or globs read as `meap prepare` reads them (text, JSONL/JSON "
        "`text` fields, Parquet), `builtin` (Paul Graham essays) or `builtin-prose` "
        "(public-domain prose) (default: builtin)"
    )
    lengths: list[int] = option(
        "prompt lengths in model tokens (default: 512,1024,2048)",
        factory=lambda: list(NIAH_LENGTHS),
        comma=True,
        metavar="N,N,...",
    )
    depths: list[float] = option(
        "needle depths in percent (default: 0,25,50,75,100)",
        factory=lambda: list(NIAH_DEPTHS),
        comma=True,
        metavar="PERCENT,...",
    )
    needle: str | None = option("a fixed needle sentence (default: random RULER-style needles)", metavar="SENTENCE")
    question: str | None = option("the question for --needle", metavar="TEXT")
    answer: str | None = option("the expected answer for --needle", metavar="TEXT")
    samples: int = option("needles per cell", 1)
    distractors: int = option("other needles (other keys and values) in each haystack: RULER's multi-key NIAH", 0)
    absent: bool = option(
        "control: leave the asked needle out (only distractors remain); summary.json then says "
        "how often a distractor's value was given",
        False,
        switch=True,
    )
    variant: str = option(
        "single, multikey (3+ distractor keys), multivalue (4 values under one key, all to "
        "recall), multiquery (4 keys asked at once) or reasoning (two needles to combine): RULER's "
        "NIAH tasks and NeedleBench's multi-needle reasoning",
        "single",
        metavar="VARIANT",
    )
    value_kind: str = option("needle values: numbers, words or uuids", "numbers", metavar="KIND")
    seed: int = option("seed of the needles and their placement", 0)

    def problems(self) -> list[str]:
        found = GenerationOptions.problems(self)
        fixed = (self.needle, self.question, self.answer)
        if any(fixed) and not all(fixed):
            found.append("--needle, --question and --answer go together")
        if self.samples < 1:
            found.append(f"--samples: expected an integer >= 1, got {self.samples}")
        if not self.lengths or any(length < 1 for length in self.lengths):
            found.append(f"--lengths: expected positive token counts, got {self.lengths}")
        if any(not 0 <= depth <= 100 for depth in self.depths):
            found.append(f"--depths: expected percentages within [0, 100], got {self.depths}")
        return found


@dataclass
class MDQAConfig(GenerationOptions):
    model: str = _model()
    data: list[str] = option(
        "JSONL(.gz) files in the lost-in-the-middle format (`meap data make-mdqa`, or nq-open-*)",
        factory=list,
        required=True,
        metavar="FILE",
    )
    output: str = _output("directory for results.jsonl, summary.json, mdqa.png")
    limit: int | None = option("examples per file (default: all)")
    teacher_forced: bool = option(
        "also score the first gold answer teacher-forced after the prompt: exact match "
        "(every answer token the top prediction) and its log-probability",
        False,
        switch=True,
    )

    def problems(self) -> list[str]:
        found = GenerationOptions.problems(self) + ([] if self.data else ["mdqa: no data files given"])
        if self.limit is not None and self.limit < 1:
            found.append(f"limit must be at least 1, got {self.limit}")
        return found


@dataclass
class RetrievalConfig(GenerationOptions):
    model: str = _model()
    probes: str = option(
        "JSONL of probes: `context`, `answer`, `distractors` (values of the other needles), "
        "`absent` (the asked needle left out)",
        required=True,
        metavar="FILE",
    )
    output: str = _output("directory for results.jsonl and summary.json")
    attention: bool = option(
        "also measure attention from the position that predicts the value onto the asked and "
        "the distractors' values, per layer (eager kernel)",
        False,
        switch=True,
    )


@dataclass
class HarnessConfig(CommandConfig):
    model: str = _model()
    tasks: list[str] = option(
        "comma-separated lm-eval task names", factory=list, comma=True, required=True, metavar="TASK,..."
    )
    output: str = _output("directory for results.json")
    num_fewshot: int = option("examples shown before each question", 0)
    limit: int | None = option("examples per task (default: all)")
    include_path: str | None = option("directory of local lm-eval task definitions (offline data)", metavar="DIR")
    batch_size: int = _batch_size()
    dtype: str = _dtype()
    log_samples: bool = option(
        "also write lm-eval's per-sample records (samples_<task>.jsonl: each document, the requests, the "
        "model's responses and its metrics)",
        False,
        switch=True,
    )
    no_progress: bool = _no_progress()

    def problems(self) -> list[str]:
        found = (
            []
            if self.tasks
            else ["no lm-eval task given: name at least one (e.g. arc_easy, or a task under --include-path)"]
        )
        if self.num_fewshot < 0:
            found.append(f"num_fewshot must be 0 or more, got {self.num_fewshot}")
        if self.limit is not None and self.limit < 1:
            found.append(f"limit must be a positive number of examples per task, got {self.limit}")
        if self.batch_size < 1:
            found.append(f"batch_size must be positive, got {self.batch_size}")
        return found


@dataclass
class AttentionConfig(CommandConfig):
    model: list[str] = option(
        "one or more: Hugging Face model directories, hub ids, meap run directories, `smollm2-135m`",
        factory=list,
        required=True,
        metavar="MODEL",
    )
    output: str = _output("directory for attention.json and the plots")
    samples: int = option("probes (needle inputs) per model", 8)
    length: int = option("probe length in model tokens", 1024, metavar="TOKENS")
    haystack: list[str] = _haystack(
        "files, directories or globs (read as `meap prepare` reads them), `builtin` (Paul "
        "Graham essays) or `builtin-prose` (default: builtin)"
    )
    mask_ratio: float = option("context share masked in the masked copy", DEFAULT_MASK_RATIO, metavar="RATIO")
    seed: int = option("seed of the probes' needles and masks", 0)
    no_progress: bool = _no_progress("no progress bars (none either when stderr is not a terminal)")

    def problems(self) -> list[str]:
        found = (
            [] if self.samples >= 1 and self.length >= 8 else ["attention: expected --samples >= 1 and --length >= 8"]
        )
        if problem := mask_ratio_problem(self.mask_ratio, zero=False):
            found.append(f"--mask-ratio: {problem}")
        return found


@dataclass
class MakeMDQAConfig(CommandConfig):
    output: str = _output("file to write (.jsonl.gz is gzipped)", metavar="FILE")
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
    model: str = _model()
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
    dtype: str = _dtype()

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
    output: str = _output("directory for report.md, report.html and plots")
