"""The paired experiments' configs: ``meap demo`` (pretraining) and ``meap demo-sft`` (fine-tuning). Each
holds the config of its training command as its ``train:`` section (every run's training keys, less those
the experiment sets for each run: :attr:`PairedExperiment.RUN_KEYS`), beside what the pairing and the
evaluations need."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meap.config.loading import help_field, sections
from meap.config.training import PretrainConfig, SFTConfig
from meap.constants import (
    DTYPES,
    MDQA_DISTRACTORS,
    NUMERICS,
    OBJECTIVES,
    ONSET_THRESHOLD,
    ONSET_WINDOW,
    mask_ratio_problem,
)
from meap.eval.mdqa import MDQAConfig
from meap.eval.retrieval import RetrievalConfig
from meap.rundir import RunDir

# The fine-tuning experiment's arms: name -> (objective trained, the key holding its epochs). The
# equal-steps arm is NTP-SFT with MEAP-SFT's epochs: the same optimizer steps and learning-rate schedule
# (MEAP's masked copy rides in the same row), so the objective is compared without the schedule.
SFT_ARMS = {"ntp": ("ntp", "ntp_epochs"), "ntp-equal-steps": ("ntp", "meap_epochs"), "meap": ("meap", "meap_epochs")}


def dose_arm(ratio: float) -> str:
    """The name of a dose-response branch: ``ntp`` for ratio 0, else ``meap-<ratio>`` (``meap-0.05``)."""
    return "ntp" if ratio == 0 else f"meap-{ratio:g}"


def arm_ratio(name: str) -> float:
    """The mask ratio a dose-response branch named by :func:`dose_arm` trained with."""
    return 0.0 if name == "ntp" else float(name.removeprefix("meap-"))


@dataclass
class PairedExperiment:
    """What the two experiments share: ``objectives`` lists the objectives to pair (each run's own
    ``objective`` is set by the experiment, not a key), ``seeds`` the training seeds (each trains every
    objective), and both are checked alike."""

    numerics: str = help_field(
        "CPU arithmetic: `portable` (the AVX2 kernels of PyTorch and MKL on every x86 CPU, so another "
        "machine repeats the numbers) or `native` (each CPU's fastest kernels; runs differ across CPU types)",
        default="portable",
    )

    # Keys that may change between a run and its continuation: where results are also published, and the
    # verdict's own settings (it is recomputed every time); and evaluation settings, after which the runs are
    # evaluated again, not trained again.
    FREE_KEYS = ("summary", "records")
    EVALUATION_KEYS = ()
    # The training keys the experiment sets for each run (not keys of its `train:` section)
    RUN_KEYS = ("objective", "output", "seed")
    ARMS = OBJECTIVES  # the names `objectives` may list

    # keys an older meap accepted with one value only (a recipe holding it loads; any other value is refused)
    RETIRED = ()

    @classmethod
    def upgrade_recipe(cls, values: dict) -> dict:
        """A recipe of an older meap in today's keys: its training keys at the top level (before they were the
        ``train:`` section) moved there; those the experiment sets for each run stay, and are refused."""
        values = {key: value for key, value in values.items() if (key, value) not in cls.RETIRED}
        own = {f.name for f in dataclasses.fields(cls)}
        training = {f.name for f in dataclasses.fields(sections(cls)["train"])} - own - set(cls.RUN_KEYS)
        if not any(key in training for key in values):
            return values
        moved = {key: value for key, value in values.items() if key in training}
        kept = {key: value for key, value in values.items() if key not in training}
        return {**kept, "train": {**moved, **(values.get("train") or {})}}

    @classmethod
    def upgrade_saved(cls, saved: dict) -> dict:
        """A config.yaml of an older meap in today's keys: ``objective: ntp,meap`` (before ``objectives`` was a
        list), the keys set for each run (saved beside the others, before ``train:``) dropped, and
        :meth:`upgrade_recipe`."""
        listed = saved.get("objective")
        if isinstance(listed, str) and "objectives" not in saved:
            saved = {key: value for key, value in saved.items() if key != "objective"}
            saved["objectives"] = [name.strip() for name in listed.split(",") if name.strip()]
        own = {f.name for f in dataclasses.fields(cls)}
        return cls.upgrade_recipe({key: value for key, value in saved.items() if key in own or key not in cls.RUN_KEYS})

    def training_problems(self) -> list[str]:
        """The ``train:`` section's problems, named as its keys are (``train.lr``)."""
        return [f"train.{problem}" for problem in self.train.problems()]

    def training_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def resolved_output(self) -> Path:
        return Path(self.output or f"runs/{self.command}")

    def pairing_problems(self) -> list[str]:
        found, objectives = [], self.objectives
        if (
            not objectives
            or any(name not in self.ARMS for name in objectives)
            or len(set(objectives)) < len(objectives)
        ):
            names = ", ".join(f"`{name}`" for name in self.ARMS)
            found.append(f"objectives: expected distinct names from {names}, got {objectives}")
        if len(set(self.seeds)) < len(self.seeds) or any(not 0 <= seed < 2**32 for seed in self.seeds):
            found.append(f"seeds: expected distinct integers in [0, 2**32), got {self.seeds}")
        if self.numerics not in NUMERICS:
            found.append(f"numerics: expected one of {', '.join(NUMERICS)}, got {self.numerics!r}")
        return found


def branch_training() -> PretrainConfig:
    """The demo's branches by default, sized for 2 CPU cores: ``max_steps`` is the window in which the onset
    is looked for; the rate stays at ``lr`` (``min_lr`` equal: the schedule must not force the onset), and
    ``warmup_steps`` warms up the shared start (the branches continue at ``lr``)."""
    return PretrainConfig(
        model="tiny-2l",
        seq_len=64,
        document_attention=True,
        micro_batch_size=32,
        max_steps=2000,
        lr=3e-3,
        min_lr=3e-3,
        warmup_steps=100,
        log_every=50,
        eval_every=500,
        save_every=500,
        report_to=["none"],
    )


@dataclass
class DemoConfig(PairedExperiment):
    """A paired pretraining experiment on key-based retrieval, measured as learning speed
    (:mod:`meap.experiments.demo`).

    Per training seed: a shared start (NTP on copy drills, short sequences) that forms copying but not
    lookup by key, then one branch per objective from that same model, at a constant learning rate, with
    teacher-forced retrieval probes every ``probe_every`` steps. ``train`` holds the branches' training keys
    (:class:`PretrainConfig`'s); ``objectives`` lists the objectives to pair.
    """

    objectives: list[str] = help_field(
        "objectives to train and compare, from `ntp`, `meap` (default: ntp meap)",
        {"metavar": "NAME"},
        default_factory=lambda: list(OBJECTIVES),
    )
    output: str = help_field("demo directory (default: runs/demo)", {"short": "-o"}, default="")
    seed: int = help_field(
        "seeds the demo corpus, the keys and the probes (shared by every training seed); the one training "
        "seed when `seeds` is empty",
        default=1337,
    )
    seeds: list[int] = help_field(
        "training seeds (model init, data order, masks); each seed has its own shared start "
        "and trains every objective from it. Empty: `seed` alone",
        default_factory=list,
    )
    jobs: int = help_field(
        "training runs at once, each a one-thread process (the numbers do not depend on it)", default=2
    )
    summary: str = help_field(
        "also write the summary JSON to this file (e.g. results/evidence-cpu.json), and its "
        "tables beside it (.md) and the curves (.png)",
        default="",
    )
    records: str = help_field(
        "also write every probe curve and per-probe score, gzipped, to this file (what the summary is recomputed from)",
        default="",
    )
    task: str = help_field(
        "what the probes measure and the branches train on: `retrieval` (lookup by key among "
        "distractor needles, on the retrieval documents) or `copy` (continuing a repeated list, on "
        "the copy drills: RESULTS.md's pilot rule)",
        default="copy",
    )
    # The demo corpus; `seed` seeds it, the keys and the probes
    vocab_size: int = help_field("BPE vocabulary, trained on the built-in prose and needles", default=2048)
    documents: int = help_field(
        "retrieval documents: needles under distinct keys in prose, some asked for at the end "
        "(trained on with task retrieval)",
        default=2000,
    )
    needles_per_document: list[int] = help_field(
        "fewest and most needles in a training document", default_factory=lambda: [2, 6]
    )
    questions_per_document: list[int] = help_field(
        "fewest and most needles asked about in a training document (at most half of its needles)",
        default_factory=lambda: [1, 3],
    )
    filler_words: list[int] = help_field(
        "fewest and most prose words around a training document's needles", default_factory=lambda: [0, 40]
    )
    held_out_keys: int = help_field(
        "key words kept out of training as keys, for the probes and the evaluation", default=100
    )
    # The shared start of each seed (NTP on copy drills)
    shared_steps: int = help_field(
        "optimizer steps of each seed's shared start, on copy drills (0: the branches start from a fresh init)",
        default=200,
    )
    shared_seq_len: int = help_field("sequence length of the shared start", default=64)
    shared_batch_size: int = help_field("sequences per step in the shared start", default=32)
    drill_documents: int = help_field("copy drills (a list of random words, then the list again)", default=150000)
    drill_numbers: list[int] = help_field("fewest and most words in a copy drill", default_factory=lambda: [2, 5])
    # Probes during the branches, and the onset read from them
    probes: int = help_field("teacher-forced probes scored during training", default=128)
    distractors: int = help_field(
        "needles besides the asked one in every probe and evaluation prompt, values of the "
        "same shape under other keys (a copier scores at most 1/(distractors + 1))",
        default=3,
    )
    probe_filler_words: list[int] = help_field(
        "fewest and most prose words around a probe's needles", default_factory=lambda: [0, 40]
    )
    probe_every: int = help_field("optimizer steps between probe scores", default=50)
    onset_threshold: float = help_field(
        "the onset is where the probes' moving accuracy first reaches this", default=ONSET_THRESHOLD
    )
    onset_window: int = help_field("probe scores in the moving average of the onset", default=ONSET_WINDOW)
    mask_ratios: list[float] = help_field(
        "dose-response: besides NTP (ratio 0), a MEAP branch at each of these mask ratios from every "
        "shared start, read as a trend over the ratios (meap.experiments.dose). Empty: NTP vs MEAP at mask_ratio",
        default_factory=list,
    )
    # Final evaluation of every branch
    eval_probes: int = help_field("greedy, strictly scored retrieval prompts per run (its own draw)", default=256)
    absent_probes: int = help_field("prompts with the asked needle left out (key selectivity)", default=0)
    eval_batch_size: int = help_field("prompts per forward pass of the evaluation", default=32)
    # The branches' training (PretrainConfig's keys; the demo corpus is built in the output directory)
    train: PretrainConfig = field(default_factory=branch_training)

    command = "demo"
    FREE_KEYS = (*PairedExperiment.FREE_KEYS, "onset_threshold", "onset_window")
    EVALUATION_KEYS = ("eval_probes", "absent_probes", "eval_batch_size")
    # the branches train on the demo's corpus and score its probes, every `probe_every` steps
    RUN_KEYS = (*PairedExperiment.RUN_KEYS, "data", "probe_file", "probe_every")
    RETIRED = (("data", "demo"),)  # the demo corpus, before `train:`

    def problems(self) -> list[str]:
        found = self.training_problems() + self.pairing_problems()
        for key in (
            "vocab_size",
            "documents",
            "held_out_keys",
            "shared_seq_len",
            "shared_batch_size",
            "probes",
            "distractors",
            "probe_every",
            "onset_window",
            "eval_probes",
            "eval_batch_size",
            "jobs",
        ):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        for key in ("shared_steps", "drill_documents", "absent_probes"):
            if getattr(self, key) < 0:
                found.append(f"{key}: expected an integer >= 0, got {getattr(self, key)}")
        ranges = {
            "filler_words": 0,
            "probe_filler_words": 0,
            "needles_per_document": 1,
            "drill_numbers": 1,
            "questions_per_document": 1,
        }
        for key, least in ranges.items():
            value = getattr(self, key)
            if len(value) != 2 or not least <= value[0] <= value[1]:
                found.append(f"{key}: expected [fewest, most] with {least} <= fewest <= most, got {value}")
        if self.shared_steps and not self.drill_documents:
            found.append("drill_documents: expected > 0 when shared_steps > 0")
        if not 0 < self.onset_threshold <= 1:
            found.append(f"onset_threshold: expected a share in (0, 1], got {self.onset_threshold}")
        if self.task not in ("retrieval", "copy"):
            found.append(f"task: expected `retrieval` or `copy`, got {self.task!r}")
        ratios = self.mask_ratios
        if ratios and (len(ratios) < 2 or sorted(set(ratios)) != list(ratios)):
            found.append(f"mask_ratios: expected at least 2 ascending, distinct values, got {ratios}")
        found += [f"mask_ratios: {problem}" for r in ratios if (problem := mask_ratio_problem(r, zero=False))]
        if ratios and set(self.objectives) != set(OBJECTIVES):
            found.append(f"objectives: a dose-response (mask_ratios) trains `ntp` and `meap`, got {self.objectives}")
        if self.probe_every % self.train.log_every:
            found.append(
                f"probe_every: expected a multiple of train.log_every ({self.train.log_every}), got {self.probe_every}"
            )
        return found

    def arms(self) -> list[tuple[str, str, dict]]:
        """Each seed's branches: (name, objective, PretrainConfig overrides); one per objective, or for a
        dose-response NTP and MEAP at each of ``mask_ratios``."""
        if not self.mask_ratios:
            return [(objective, objective, {}) for objective in self.objectives]
        return [(dose_arm(0), "ntp", {})] + [(dose_arm(r), "meap", {"mask_ratio": r}) for r in self.mask_ratios]

    def retrieval_config(self, run: Path, probes: Path, progress: bool) -> RetrievalConfig:
        """The evaluation of the branch ``run`` on ``probes``, with attention; copying is scored on the next
        word alone (the list goes on after it)."""
        return RetrievalConfig(
            model=str(run),
            probes=str(probes),
            output=str(RunDir(run).evaluation("retrieval")),
            max_new_tokens=1 if self.task == "copy" else 12,
            batch_size=self.eval_batch_size,
            attention=True,
            no_progress=not progress,
        )

    def pretrain_config(self, objective: str, data: str, output: Path, seed: int, **overrides: Any) -> PretrainConfig:
        """A pretraining run of this experiment (``overrides``: other PretrainConfig keys)."""
        return dataclasses.replace(
            self.train, objective=objective, data=data, output=str(output), seed=seed, **overrides
        )


@dataclass
class SFTDemoConfig(PairedExperiment):
    """A paired fine-tuning experiment: NTP-SFT and MEAP-SFT of one model per seed at equal training tokens,
    multi-document QA of the base model and of every fine-tuned one, and the paired comparison. ``train``
    holds every run's fine-tuning keys (:class:`SFTConfig`'s: the model, the data, the step)."""

    objectives: list[str] = help_field(
        "arms to fine-tune and compare, from `ntp`, `meap` and `ntp-equal-steps` (NTP-SFT for "
        "`meap_epochs` epochs: MEAP-SFT's optimizer steps) (default: ntp meap)",
        {"metavar": "NAME"},
        default_factory=lambda: list(OBJECTIVES),
    )
    output: str = help_field("demo directory (default: runs/demo-sft)", {"short": "-o"}, default="")
    seed: int = help_field(
        "seeds the evaluation's questions and the generated training conversations; the one fine-tuning seed "
        "when `seeds` is empty",
        default=1337,
    )
    seeds: list[int] = help_field(
        "fine-tuning seeds (data order, masks, LoRA init); empty: `seed` alone", default_factory=list
    )
    summary: str = help_field("also write the summary JSON to this file, and its tables beside it (.md)", default="")
    records: str = help_field(
        "also write every model's per-question MDQA records, gzipped, to this file (what the "
        "summary is recomputed from: meap experiment recompute FILE)",
        default="",
    )
    ntp_epochs: int = help_field("epochs of NTP-SFT", default=4)
    meap_epochs: int = help_field(
        "epochs of MEAP-SFT (the paper: half NTP's, as each long example is doubled)", default=2
    )
    mdqa_num_docs: int = help_field("documents per MDQA question", default=10)
    mdqa_gold_positions: list[int] = help_field(
        "gold-document positions evaluated (0-based)", default_factory=lambda: [0, 4, 9]
    )
    mdqa_examples: int = help_field("MDQA questions per gold position", default=30)
    mdqa_passage_words: int = help_field("words per MDQA document", default=40)
    mdqa_distractors: str = help_field(
        "MDQA distractor documents (evaluation and generated training conversations): "
        "hard (each with a fact of the gold fact's shape about other names) or filler "
        "(prose only)",
        default="hard",
    )
    max_new_tokens: int = help_field("tokens generated per MDQA answer", default=24)
    eval_dtype: str = help_field("precision of the MDQA evaluation (`auto`, `float32`, `bfloat16`)", default="auto")
    train_conversations: int = help_field(
        "train on this many generated MDQA conversations (questions disjoint from the "
        "evaluation's, answers quoting the gold document) instead of `data`; 0: `data`",
        default=0,
    )
    forgetting_gate: float = help_field(
        "validity gate: NTP-SFT this far below the base model's accuracy (a fraction) "
        "means the run measures forgetting, not the objective",
        default=0.10,
    )
    train: SFTConfig = field(default_factory=SFTConfig)

    command = "demo-sft"
    FREE_KEYS = (*PairedExperiment.FREE_KEYS, "forgetting_gate")
    # each arm's epochs are its own key (ntp_epochs, meap_epochs): the runs stop at them
    RUN_KEYS = (*PairedExperiment.RUN_KEYS, "epochs", "max_steps")
    ARMS = tuple(SFT_ARMS)
    EVALUATION_KEYS = ("mdqa_gold_positions", "mdqa_examples", "max_new_tokens", "eval_dtype")

    def problems(self) -> list[str]:
        found = self.training_problems() + self.pairing_problems()
        for key in (
            "ntp_epochs",
            "meap_epochs",
            "mdqa_num_docs",
            "mdqa_examples",
            "mdqa_passage_words",
            "max_new_tokens",
        ):
            if getattr(self, key) < 1:
                found.append(f"{key}: expected a positive integer, got {getattr(self, key)}")
        if self.train_conversations < 0:
            found.append(f"train_conversations: expected 0 or more, got {self.train_conversations}")
        if not 0 < self.forgetting_gate <= 1:
            found.append(f"forgetting_gate: expected a fraction in (0, 1], got {self.forgetting_gate}")
        positions = self.mdqa_gold_positions
        if (
            not positions
            or len(set(positions)) < len(positions)
            or any(not 0 <= p < self.mdqa_num_docs for p in positions)
        ):
            found.append(
                f"mdqa_gold_positions: expected distinct positions in [0, {self.mdqa_num_docs}), got {positions}"
            )
        if self.mdqa_distractors not in MDQA_DISTRACTORS:
            found.append(
                f"mdqa_distractors: expected one of {', '.join(MDQA_DISTRACTORS)}, got {self.mdqa_distractors!r}"
            )
        if self.eval_dtype not in DTYPES:
            found.append(f"eval_dtype: expected {', '.join(DTYPES[:-1])} or {DTYPES[-1]}, got {self.eval_dtype!r}")
        return found

    def mdqa_config(self, model: str, files: list[Path], output: Path, progress: bool) -> MDQAConfig:
        """The MDQA evaluation of ``model`` (the base model or a fine-tuned run), teacher-forced scores too."""
        return MDQAConfig(
            model=model,
            data=[str(path) for path in files],
            output=str(output),
            max_new_tokens=self.max_new_tokens,
            dtype=self.eval_dtype,
            teacher_forced=True,
            no_progress=not progress,
        )

    def arm_epochs(self, arm: str) -> int:
        """The epochs one arm (:data:`SFT_ARMS`) trains."""
        return getattr(self, SFT_ARMS[arm][1])

    def sft_config(self, arm: str, output: Path, seed: int) -> SFTConfig:
        """The fine-tuning run of one arm (:data:`SFT_ARMS`) and seed."""
        objective, epochs = SFT_ARMS[arm][0], self.arm_epochs(arm)
        return dataclasses.replace(
            self.train, objective=objective, output=str(output), seed=seed, epochs=epochs, max_steps=0
        )
