"""``meap demo``: a paired NTP-vs-MEAP experiment, from corpus to report, on a laptop CPU.

Stages (each prints where it is; a stage whose output is complete is skipped, so an interrupted demo
continues where it stopped):

1. **corpus**: the demo documents (below) are written to ``corpus.jsonl`` and prepared with a BPE trained
   on them (``data/``); skipped when ``data`` names a prepared directory;
2. **train**: one ``meap pretrain`` run per objective (``ntp/``, ``meap/``), same seed, same data order;
3. **evaluate**: NIAH and synthetic MDQA on each run (``<run>/eval/``), attention analysis (``attention/``,
   and per run so the report finds it);
4. **report**: ``meap compare`` of the runs (``report/``) and ``demo.json`` with the headline numbers.

Why the corpus looks like it does: a model this small, trained for minutes on prose alone, retrieves
nothing (0% NIAH). The demo corpus therefore mixes prose passages from the built-in corpus with documents
that teach the skill being measured: retrieval documents in the NIAH prompt format (a random 7-digit value
stated somewhere in prose, asked for at the end), multi-document QA documents in the lost-in-the-middle
format with their answers, and copy drills (a list of random numbers, then the same list again). Every
value the evaluation asks for is removed from the training documents, so no answer can be memorised.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import time
from pathlib import Path

from meap.config import DemoConfig, config_to_dict, save_config
from meap.errors import UserError

CORPUS_FILE = "corpus.jsonl"
SUMMARY_FILE = "demo.json"
HAYSTACK_FILE = "haystack.txt"
HAYSTACK_PASSAGES = 40  # 200-word prose passages: ~10k words, more than the longest demo context needs
# `meap demo --quick`: every stage on a few documents and steps (a smoke test, not an experiment).
QUICK = dict(prose_documents=60, retrieval_documents=120, mdqa_documents=30, drill_documents=60, vocab_size=512,
             seq_len=256, micro_batch_size=4, max_steps=12, warmup_steps=2, eval_every=6, save_every=0,
             log_every=2, niah_lengths=[96, 192], niah_depths=[0.0, 50.0, 100.0], niah_samples=1,
             mdqa_examples=2, attention_samples=2, attention_length=128)


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The demo corpus
# ---------------------------------------------------------------------------------------------------------

def demo_documents(config: DemoConfig, held_out: set[str]) -> list[str]:
    """The demo corpus in a seeded shuffled order; no document holds any value in ``held_out``."""
    from meap.data.mdqa import make_example, random_passage
    from meap.eval import niah
    from meap.eval.mdqa import build_prompt

    rng = random.Random(f"meap-demo:{config.seed}")

    def fresh_number() -> str:
        while (value := str(rng.randrange(1_000_000, 10_000_000))) in held_out:
            pass
        return value

    documents = [random_passage(rng, 200) for _ in range(config.prose_documents)]
    for _ in range(config.retrieval_documents):
        needle = niah.random_needle(rng)
        needle = niah.Needle(needle.text.replace(needle.answer, value := fresh_number()), needle.question, value)
        context = niah.insert_at_depth(random_passage(rng, rng.randint(*config.context_words)), needle.text,
                                       rng.uniform(0, 100))
        documents.append(f"{niah.question_text(context, needle.question)} {needle.answer}")
    index = written = 0
    while written < config.mdqa_documents:
        example = make_example(f"demo-train-{config.seed}", index, config.mdqa_num_docs,
                               index % config.mdqa_num_docs)
        index += 1
        document = f"{build_prompt(example)} {example['answers'][0]}"
        if not any(value in document for value in held_out):  # names recur across examples in other roles
            documents.append(document)
            written += 1
    for _ in range(config.drill_documents):
        numbers = ", ".join(fresh_number() for _ in range(rng.randint(3, 10)))
        documents.append(f"Numbers: {numbers}. Again: {numbers}.")
    rng.shuffle(documents)
    return documents


def _haystack(config: DemoConfig, output: Path) -> list[str]:
    """The NIAH and attention haystack: prose like the training prose, its own random passages."""
    from meap.data.mdqa import random_passage

    path = output / HAYSTACK_FILE
    if not path.is_file():
        rng = random.Random(f"meap-demo-haystack:{config.seed}")
        _write_atomically(path, (random_passage(rng, 200) for _ in range(HAYSTACK_PASSAGES)))
    return [str(path)]


def _write_atomically(path: Path, lines) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------------------------

def _mdqa_files(config: DemoConfig, directory: Path) -> list[Path]:
    """One evaluation file per gold position, the same questions in each (the paper's protocol)."""
    from meap.data.mdqa import make_mdqa

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for gold in range(config.mdqa_num_docs):
        path = directory / f"demo-mdqa-{config.mdqa_num_docs}docs_gold_at_{gold}.jsonl.gz"
        if not path.is_file():
            make_mdqa(path, num_docs=config.mdqa_num_docs, gold_position=gold, examples=config.mdqa_examples,
                      seed=config.seed)
        files.append(path)
    return files


def _held_out_values(config: DemoConfig, mdqa_files: list[Path]) -> set[str]:
    from meap.eval import niah

    count = len(config.niah_lengths) * len(config.niah_depths) * config.niah_samples
    values = {needle.answer for needle in niah.random_needles(count, config.seed)}
    for path in mdqa_files:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            values.update(answer for line in lines for answer in json.loads(line)["answers"])
    return values


def _prepare(config: DemoConfig, output: Path, held_out: set[str], progress: bool) -> Path:
    from meap.data.prepare import prepare_corpus
    from meap.data.shards import META_FILE

    if config.data != "demo":
        return Path(config.data)
    data = output / "data"
    if (data / META_FILE).is_file():
        return data
    documents = demo_documents(config, held_out)
    _write_atomically(output / CORPUS_FILE, (json.dumps({"text": text}) for text in documents))
    prepare_corpus([str(output / CORPUS_FILE)], data, train_tokenizer=config.vocab_size, num_proc=1,
                   overwrite=True, progress=progress)
    return data


def _train(config: DemoConfig, objective: str, data: Path, output: Path, progress: bool) -> Path:
    from meap.train import checkpoint_dirs, holds_run, pretrain

    run = output / objective
    if (run / "final" / "config.json").is_file():
        return run
    resume = holds_run(run) and bool(checkpoint_dirs(run / "checkpoints"))
    return pretrain(config.pretrain_config(objective, str(data), run), resume=resume, overwrite=not resume,
                    progress=progress)


def _evaluate(config: DemoConfig, run: Path, mdqa_files: list[Path], haystack: list[str], progress: bool) -> None:
    from meap.eval import mdqa, niah

    if not (run / "eval" / "niah" / "summary.json").is_file():
        niah.run(str(run), run / "eval" / "niah", haystack=haystack, lengths=config.niah_lengths,
                 depths=config.niah_depths, samples=config.niah_samples, seed=config.seed, max_new_tokens=10,
                 batch_size=16, progress=progress)
    if not (run / "eval" / "mdqa" / "summary.json").is_file():
        mdqa.run(str(run), [str(path) for path in mdqa_files], run / "eval" / "mdqa", max_new_tokens=12,
                 batch_size=16, progress=progress)
    _attention(config, [run], run / "eval" / "attention", haystack, progress)


def _attention(config: DemoConfig, runs: list[Path], output: Path, haystack: list[str], progress: bool) -> None:
    from meap.eval import attention

    if not (output / "attention.json").is_file():
        attention.run([str(run) for run in runs], output, samples=config.attention_samples,
                      length=config.attention_length, haystack=haystack, mask_ratio=config.mask_ratio,
                      seed=config.seed, progress=progress)


def _headline(run: Path) -> dict:
    """The numbers the demo prints, read back from the run's files."""
    from meap.report import read_run

    found = read_run(run)
    metrics, evaluations = found["metrics"], found["evaluations"]

    def last(key: str):
        return next((record[key] for record in reversed(metrics) if key in record), None)

    mass = evaluations["attention"][1]["models"][str(run)]["average"]["segment_mass"]
    return {"final_loss": last("loss"), "final_val_loss": last("val_loss"), "train_seconds": last("elapsed_s"),
            "niah_substring": evaluations["niah"][1]["overall"]["substring"],
            "mdqa_accuracy": evaluations["mdqa"][1]["accuracy"],
            "attention_on_needle": mass.get("answer")}


def _check_output(config: DemoConfig, output: Path, overwrite: bool) -> None:
    """An existing demo directory of the same configuration is continued; anything else needs --overwrite."""
    import yaml

    if not output.exists():
        return
    if not output.is_dir():
        raise UserError(f"{output}: output path exists and is not a directory")
    saved = output / "config.yaml"
    if overwrite:
        if any(output.iterdir()) and not saved.is_file():
            raise UserError(f"{output}: not a meap demo directory; refusing to delete it (choose another --output)")
        shutil.rmtree(output)
        return
    if saved.is_file() and yaml.safe_load(saved.read_text(encoding="utf-8")) != config_to_dict(config):
        raise UserError(f"{output}: holds a demo with another configuration; pass --overwrite to start over")
    if not saved.is_file() and any(output.iterdir()):
        raise UserError(f"{output}: directory is not empty and holds no demo; choose another --output")


def run_demo(config: DemoConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every stage for ``config`` and return the headline numbers (also in ``demo.json``)."""
    from meap.report import compare_runs

    output = config.resolved_output()
    _check_output(config, output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, output / "config.yaml")
    started = time.monotonic()
    objectives = config.objectives()
    clock = lambda: f"{time.monotonic() - started:5.0f} s"  # noqa: E731

    _say(f"{clock()}  1/4 corpus and evaluation files")
    mdqa_files = _mdqa_files(config, output / "mdqa")
    haystack = _haystack(config, output)
    data = _prepare(config, output, _held_out_values(config, mdqa_files), progress)
    runs = []
    for number, objective in enumerate(objectives, 1):
        _say(f"{clock()}  2/4 training {objective.upper()} ({number} of {len(objectives)}): "
             f"{config.model}, {config.max_steps} steps")
        runs.append(_train(config, objective, data, output, progress))
    for run in runs:
        _say(f"{clock()}  3/4 evaluating {run.name}: NIAH, MDQA, attention")
        _evaluate(config, run, mdqa_files, haystack, progress)
    if len(runs) > 1:
        _attention(config, runs, output / "attention", haystack, progress)
    _say(f"{clock()}  4/4 report")
    report = compare_runs(runs, output / "report") if len(runs) > 1 else None
    summary = {"runs": {run.name: _headline(run) for run in runs}, "wall_seconds": round(time.monotonic() - started, 1),
               "report": str(report) if report else None}
    (output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    def cell(value, percent=False):
        if value is None:
            return "n/a"
        return f"{100 * value:.1f}%" if percent else f"{value:.3f}"

    print(f"\n{'run':<6} {'loss':>7} {'val loss':>9} {'NIAH':>7} {'MDQA':>7} {'attn→needle':>12}")
    for name, row in summary["runs"].items():
        print(f"{name:<6} {cell(row['final_loss']):>7} {cell(row['final_val_loss']):>9} "
              f"{cell(row['niah_substring'], True):>7} {cell(row['mdqa_accuracy'], True):>7} "
              f"{cell(row['attention_on_needle']):>12}")
    print(f"\n{summary['wall_seconds']:.0f} s in all; report: {summary['report'] or 'n/a (one run)'}")
