"""The layout of a run directory, in one place: every part of meap that reads or writes a run goes through
:class:`RunDir` (no module spells ``checkpoints`` or ``final`` itself). Torch-free.

::

    RUN/config.yaml      the run's configuration (every key, defaults included)
    RUN/run.json         facts of the run that are not config keys (samples per step, tokenizer fingerprint)
    RUN/metrics.jsonl    one record per logged step and per validation
    RUN/checkpoints/step-N/   resumable Trainer checkpoints, each with a manifest.json
    RUN/final/           the trained model and tokenizer, a plain Hugging Face directory
    RUN/adapter/         a LoRA run's adapter (final/ holds the merged weights)
    RUN/tensorboard/     TensorBoard event files
    RUN/eval/KIND/       an evaluation of the run (its results.jsonl, summary and figures)
"""

from __future__ import annotations

import json
from pathlib import Path

from meap.errors import UserError
from meap.fsutil import atomic_write_text

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
ADAPTER_DIR = "adapter"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
# What is not an evaluation's output when a run directory is searched for them.
ARTIFACT_DIRS = frozenset({CHECKPOINTS_DIR, FINAL_DIR, TENSORBOARD_DIR, ADAPTER_DIR})
CHECKPOINT_PREFIX = "step-"  # checkpoints/step-N: the state after optimizer step N
# a directory being written; renamed into place when complete, else removed. Not fsutil.temporary_name: every
# process of a launch writes into the same staging directory (sharded checkpoints), so its name holds no pid
STAGING_PREFIX = ".staging-"


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix(CHECKPOINT_PREFIX))


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root`` (a run's ``checkpoints/``), oldest first."""
    found = [
        p for p in root.glob(CHECKPOINT_PREFIX + "*") if p.is_dir() and p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()
    ]
    return sorted(found, key=checkpoint_step)


class RunDir:
    """The paths of the run in ``root`` and what can be read off them without loading anything."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config_file = self.root / CONFIG_FILE
        self.facts_file = self.root / RUN_FILE
        self.metrics_file = self.root / METRICS_FILE
        self.checkpoints_dir = self.root / CHECKPOINTS_DIR
        self.final_dir = self.root / FINAL_DIR
        self.adapter_dir = self.root / ADAPTER_DIR
        self.tensorboard_dir = self.root / TENSORBOARD_DIR

    def evaluation(self, kind: str) -> Path:
        """Where the run's evaluation ``kind`` (``retrieval``, ``mdqa``, ...) writes its output."""
        return self.root / EVAL_DIR / kind

    def saved_config(self) -> dict:
        """The run's config.yaml as saved (empty where ``root`` holds none)."""
        import yaml

        if not self.config_file.is_file():
            return {}
        return yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}

    def trained_length(self) -> int | None:
        """The sequence length this run trained on (``seq_len``; a fine-tune's ``max_length``), None unknown."""
        config = self.saved_config()
        length = config.get("seq_len") or config.get("max_length")
        return length if isinstance(length, int) else None

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"

    def staging(self, name: str, under_checkpoints: bool = False) -> Path:
        """Where ``name`` (``final``, ``step-N``...) is written before it is renamed into place."""
        return (self.checkpoints_dir if under_checkpoints else self.root) / f"{STAGING_PREFIX}{name}"

    def stale_staging(self) -> list[Path]:
        """Directories an interrupted save left behind (never renamed into place)."""
        return [*self.root.glob(STAGING_PREFIX + "*"), *self.checkpoints_dir.glob(STAGING_PREFIX + "*")]

    def holds_run(self) -> bool:
        return self.config_file.is_file() or self.checkpoints_dir.is_dir()

    def has_final_model(self) -> bool:
        return (self.final_dir / "config.json").is_file()

    def saved_checkpoints(self) -> list[Path]:
        return checkpoint_dirs(self.checkpoints_dir)

    def can_resume(self) -> bool:
        return self.holds_run() and bool(self.saved_checkpoints())

    def objective(self) -> str | None:
        """The objective the run trained with (its config.yaml), or None where ``root`` holds no run."""
        return self.saved_config().get("objective")

    def read_facts(self) -> dict:
        """What ``run.json`` recorded (empty before the run's first launch)."""
        return json.loads(self.facts_file.read_text()) if self.facts_file.is_file() else {}

    def done_line(self) -> str:
        """What a finished training command prints last: the final model, and for a MEAP fine-tune the share
        of conversations that got the masked copy (the rest trained as plain NTP)."""
        share = self.read_facts().get("meap_share")
        note = f" (MEAP's masked copy in {100 * share:.0f}% of the conversations)" if share is not None else ""
        return f"done: {self.final_dir}{note}"

    def write_facts(self, facts: dict) -> None:
        atomic_write_text(self.facts_file, json.dumps(facts) + "\n")

    def read_metrics(self) -> list[dict]:
        """The records of metrics.jsonl (none before the first log); a line that is not JSON is a UserError."""
        if not self.metrics_file.is_file():
            return []
        records = []
        for number, line in enumerate(self.metrics_file.read_text(encoding="utf-8").splitlines(), 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise UserError(f"{self.metrics_file}:{number}: not a JSON object") from None
        return records

    def last_logged_step(self) -> int:
        """The last step metrics.jsonl records (0 before the first), read from the line starts alone: cheap
        enough to poll while the run writes, and a line being written is passed over, not an error."""
        try:
            lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return 0
        for line in reversed(lines):
            if line.startswith('{"step": '):
                return int(line[len('{"step": ') :].split(",", 1)[0])
        return 0

    def truncate_metrics(self, last_step: int) -> None:
        """Drop records after ``last_step`` (a resumed run logs those steps again) and a half-written line."""
        if not self.metrics_file.is_file():
            return
        kept = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", last_step + 1) <= last_step:
                kept.append(line)
        atomic_write_text(self.metrics_file, "".join(line + "\n" for line in kept))


# Metrics keys that measure the clock, not the computation: two runs of the same computation differ only in these.
TIMING_KEYS = ("tokens_per_s", "mfu", "elapsed_s")


def without_timing(records: list[dict]) -> list[dict]:
    """Metrics records less their :data:`TIMING_KEYS` (what must repeat exactly when a run is repeated)."""
    return [{key: value for key, value in record.items() if key not in TIMING_KEYS} for record in records]


def last_value(records: list[dict], key: str):
    """The value of ``key`` in the last metrics record that has it (None when none has)."""
    return next((record[key] for record in reversed(records) if key in record), None)
