"""``meap demo``: a paired NTP-vs-MEAP experiment, from corpus to report, on a laptop CPU.

Stages (each prints where it is; a stage whose output is complete is skipped, so an interrupted demo
continues where it stopped):

1. **corpus**: the demo documents (below) are written to ``corpus.jsonl`` and prepared with a BPE trained
   on them (``data/``), and the copy-warm-up drills with the same tokenizer (``warmup-data/``); skipped
   when ``data`` names a prepared directory;
2. **train**: per training seed and objective, a copy warm-up run (``<objective>-warmup/``) and the main
   run continued from it (``<objective>/``); both objectives of a seed share the init and the data order.
   With several seeds each seed has its own directory (``seed-<s>/``);
3. **evaluate**: NIAH, synthetic MDQA and the attention analysis on each run (``<run>/eval/``), and the
   key check (``key-check/``: NIAH with a distractor needle, and with the asked needle absent);
4. **report**: ``meap compare`` of each seed's runs (``report/``), the paired comparison over all seeds
   (``comparison.md``) and ``demo.json`` with the headline numbers.

Why the corpus and the schedule look like they do (the search is in BENCHMARKS.md): retrieval needs
content-based copying (an induction head), and a small model trained for minutes on prose never forms
one (0% NIAH). What made it learnable on 2 CPU cores:

* documents that exercise the skill being measured: retrieval documents in the NIAH prompt format (random
  values stated under keys in prose, one asked for at the end), multi-document QA documents in the
  lost-in-the-middle format, and copy drills (a list of random numbers, then the same list again);
* answers that quote the sentence stating the fact ("The special magic number for apple is: 1234567."),
  so the value follows the same words as in the needle and plain copying retrieves it;
* numbers merged into multi-digit tokens (a digit-per-token number is hard to copy: its digits recur);
* a **copy warm-up**: copying forms within about a thousand steps when each sequence is short and dense
  with copies (64 tokens of drills), and not within thousands of steps at 256 tokens; the model that has
  formed it then learns retrieval at full length.

Every value the evaluation asks for is removed from the training documents, so no answer can be memorised.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import time
from pathlib import Path

from meap.config import DemoConfig, config_to_dict, save_config, saved_config
from meap.errors import UserError
from meap.eval.results import has_summary
from meap.fsutil import atomic_write_json, atomic_write_lines
from meap.rundir import RunDir

CORPUS_FILE = "corpus.jsonl"
WARMUP_CORPUS_FILE = "warmup-corpus.jsonl"
SUMMARY_FILE = "demo.json"
COMPARISON_FILE = "comparison.md"
HAYSTACK_FILE = "haystack.txt"
HAYSTACK_PASSAGES = 40  # 200-word prose passages: ~10k words, more than the longest demo context needs
# `meap demo --quick`: every stage on a few documents and steps (a smoke test, not an experiment).
QUICK = dict(prose_documents=60, retrieval_documents=120, mdqa_documents=30, drill_documents=60, vocab_size=512,
             copy_warmup_steps=4, copy_warmup_documents=200, copy_warmup_batch_size=4,
             seq_len=256, micro_batch_size=4, max_steps=12, warmup_steps=2, eval_every=6, save_every=0,
             log_every=2, niah_lengths=[96, 192], niah_depths=[0.0, 50.0, 100.0], niah_samples=1,
             mdqa_examples=2, attention_samples=2, attention_length=128)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The demo corpus
# ---------------------------------------------------------------------------------------------------------

def demo_documents(config: DemoConfig, held_out: set[str]) -> list[str]:
    """The demo corpus in a seeded shuffled order; no document holds any value in ``held_out``."""
    from meap.eval.mdqa_data import make_example, random_passage
    from meap.eval import niah
    from meap.eval.mdqa import build_prompt

    rng = random.Random(f"meap-demo:{config.seed}")
    fresh_number = _fresh_numbers(rng, held_out)
    documents = [random_passage(rng, 200) for _ in range(config.prose_documents)]
    for _ in range(config.retrieval_documents):
        needles, count = [], rng.randint(*config.needles_per_document)
        while len(needles) < count:
            needle = niah.random_needle(rng)
            if all(needle.question != other.question for other in needles):  # one value per key
                value = fresh_number()
                needles.append(niah.Needle(needle.text.replace(needle.answer, value), needle.question, value))
        context = random_passage(rng, rng.randint(*config.context_words)) if config.context_words[1] else ""
        for needle in needles:
            context = niah.insert_at_depth(context, needle.text, rng.uniform(0, 100))
        asked = rng.choice(needles)
        answer = asked.text if config.quote_answers else asked.answer
        documents.append(f"{niah.question_text(context, asked.question)} {answer}")
    index = written = 0
    while written < config.mdqa_documents:
        example = make_example(f"demo-train-{config.seed}", index, config.mdqa_num_docs,
                               index % config.mdqa_num_docs, passage_words=config.mdqa_passage_words)
        index += 1
        answer = _fact_sentence(example) if config.quote_answers else example["answers"][0]
        document = f"{build_prompt(example)} {answer}"
        if not any(value in document for value in held_out):  # names recur across examples in other roles
            documents.append(document)
            written += 1
    documents += _drills(rng, fresh_number, config.drill_documents, config.drill_numbers)
    rng.shuffle(documents)
    return documents


def warmup_documents(config: DemoConfig, held_out: set[str]) -> list[str]:
    """The copy-warm-up corpus: copy drills alone (short, so a 64-token sequence holds whole ones)."""
    rng = random.Random(f"meap-demo-warmup:{config.seed}")
    return _drills(rng, _fresh_numbers(rng, held_out), config.copy_warmup_documents, config.copy_warmup_numbers)


def _fresh_numbers(rng: random.Random, held_out: set[str]):
    def fresh_number() -> str:
        while (value := str(rng.randrange(1_000_000, 10_000_000))) in held_out:
            pass
        return value

    return fresh_number


def _drills(rng: random.Random, fresh_number, count: int, numbers: list[int]) -> list[str]:
    drills = []
    for _ in range(count):
        listed = ", ".join(fresh_number() for _ in range(rng.randint(*numbers)))
        drills.append(f"Numbers: {listed}. Again: {listed}.")
    return drills


def _fact_sentence(example: dict) -> str:
    """The sentence of the gold document that states the answer (its invented names occur nowhere else)."""
    gold = next(document for document in example["ctxs"] if document.get("isgold"))
    answer = example["answers"][0]
    return next(sentence for sentence in _SENTENCE.split(gold["text"]) if answer in sentence)


def _haystack(config: DemoConfig, output: Path) -> list[str]:
    """The NIAH and attention haystack: prose like the training prose, its own random passages."""
    from meap.eval.mdqa_data import random_passage

    path = output / HAYSTACK_FILE
    if not path.is_file():
        rng = random.Random(f"meap-demo-haystack:{config.seed}")
        atomic_write_lines(path, (random_passage(rng, 200) for _ in range(HAYSTACK_PASSAGES)))
    return [str(path)]


# ---------------------------------------------------------------------------------------------------------
# The stages
# ---------------------------------------------------------------------------------------------------------

def _mdqa_files(config: DemoConfig, directory: Path) -> list[Path]:
    """One evaluation file per gold position, the same questions in each (the paper's protocol)."""
    from meap.eval.mdqa_data import make_mdqa_files

    return make_mdqa_files(directory, "demo-mdqa", range(config.mdqa_num_docs), num_docs=config.mdqa_num_docs,
                           examples=config.mdqa_examples, seed=config.seed, passage_words=config.mdqa_passage_words)


def _held_out_values(config: DemoConfig, mdqa_files: list[Path]) -> set[str]:
    """Every value an evaluation asks for or places as a distractor."""
    from meap.eval import niah

    count = len(config.niah_lengths) * len(config.niah_depths) * config.niah_samples
    values = set()
    for distractors, _ in _niah_variants(config):
        for asked, others in niah.needle_sets(count, config.seed, distractors):
            values.update(needle.answer for needle in (asked, *others))
    for path in mdqa_files:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            values.update(answer for line in lines for answer in json.loads(line)["answers"])
    return values


def _niah_variants(config: DemoConfig) -> list[tuple[int, bool]]:
    """(distractors, absent) of each NIAH evaluation: the plain one, and the key check's two."""
    return [(0, False)] + ([(1, False), (1, True)] if config.key_check else [])


def _prepare(config: DemoConfig, output: Path, held_out: set[str], progress: bool) -> tuple[Path, Path | None]:
    """(main data, copy-warm-up data or None), prepared with one tokenizer."""
    from meap.data.prepare import prepare_corpus
    from meap.data.shards import META_FILE, TOKENIZER_DIR

    if config.data != "demo":
        data = Path(config.data)
    else:
        data = output / "data"
        if not (data / META_FILE).is_file():
            documents = demo_documents(config, held_out)
            atomic_write_lines(output / CORPUS_FILE, (json.dumps({"text": text}) for text in documents))
            prepare_corpus([str(output / CORPUS_FILE)], data, train_tokenizer=config.vocab_size,
                           split_digits=config.split_digits, num_proc=1, overwrite=True, progress=progress)
    if not config.copy_warmup_steps:
        return data, None
    warmup = output / "warmup-data"
    if not (warmup / META_FILE).is_file():
        documents = warmup_documents(config, held_out)
        atomic_write_lines(output / WARMUP_CORPUS_FILE, (json.dumps({"text": text}) for text in documents))
        # min_val_tokens=0: the splits of the recorded experiments (RESULTS.md); 0.5% of the warm-up drills is
        # already 50 validation sequences at their 64 tokens.
        prepare_corpus([str(output / WARMUP_CORPUS_FILE)], warmup, tokenizer=str(data / TOKENIZER_DIR),
                       num_proc=1, overwrite=True, progress=progress, min_val_tokens=0)
    return data, warmup


def _run_dir(config: DemoConfig, output: Path, seed: int, objective: str) -> Path:
    return output / objective if len(config.training_seeds()) == 1 else output / f"seed-{seed}" / objective


def _train(config: DemoConfig, objective: str, seed: int, data: Path, warmup: Path | None, output: Path,
           progress: bool) -> Path:
    run = _run_dir(config, output, seed, objective)
    if RunDir(run).has_final_model():
        return run
    model = config.model
    if warmup is not None:
        # Constant rate after its warm-up (min_lr = lr): the main run's own schedule does the decay.
        warmup_run = run.with_name(f"{objective}-warmup")
        _pretrain(config.pretrain_config(objective, str(warmup), warmup_run, seed, seq_len=config.copy_warmup_seq_len,
                                         micro_batch_size=config.copy_warmup_batch_size, grad_accum_steps=1,
                                         max_steps=config.copy_warmup_steps, min_lr=config.lr,
                                         warmup_steps=min(config.warmup_steps, config.copy_warmup_steps),
                                         eval_every=0, save_every=0), progress)
        model = str(RunDir(warmup_run).final)
    return _pretrain(config.pretrain_config(objective, str(data), run, seed, model=model), progress)


def _pretrain(config, progress: bool) -> Path:
    from meap.train import pretrain

    return continue_training(pretrain, config, progress)


def continue_training(train, config, progress: bool) -> Path:
    """Train the run of ``config`` with ``train`` (``meap.train.pretrain`` or ``sft``) as far as it still needs:
    nothing once it has its final model, resumed when it has a checkpoint, else started afresh."""
    run = RunDir(config.resolved_output())
    if run.has_final_model():
        return run.root
    resume = run.can_resume()
    return train(config, resume=resume, overwrite=not resume, progress=progress)


def _evaluate(config: DemoConfig, run: Path, key_check: Path, mdqa_files: list[Path], haystack: list[str],
              progress: bool) -> None:
    from meap.eval import mdqa, niah

    for distractors, absent in _niah_variants(config):
        # The key check writes outside the run, so `meap compare` finds the plain NIAH as the run's NIAH.
        where = run / "eval" / "niah" if not distractors else key_check / ("absent" if absent else "multikey")
        if not has_summary(where, "niah"):
            niah.run(str(run), where, haystack=haystack, lengths=config.niah_lengths, depths=config.niah_depths,
                     samples=config.niah_samples, seed=config.seed, distractors=distractors, absent=absent,
                     max_new_tokens=config.max_new_tokens, batch_size=16, progress=progress)
    if not has_summary(run / "eval" / "mdqa", "mdqa"):
        mdqa.run(str(run), [str(path) for path in mdqa_files], run / "eval" / "mdqa",
                 max_new_tokens=config.max_new_tokens, batch_size=16, progress=progress)
    _attention(config, [run], run / "eval" / "attention", haystack, progress)


def _attention(config: DemoConfig, runs: list[Path], output: Path, haystack: list[str], progress: bool) -> None:
    from meap.eval import attention

    if not has_summary(output, "attention"):
        attention.run([str(run) for run in runs], output, samples=config.attention_samples,
                      length=config.attention_length, haystack=haystack, mask_ratio=config.mask_ratio,
                      seed=config.seed, progress=progress)


def _key_check_dir(output: Path, run: Path) -> Path:
    return output / "key-check" / run.relative_to(output)


def check_output(config, output: Path, overwrite: bool) -> None:
    """An existing demo directory of the same configuration (a DemoConfig or SFTDemoConfig) is continued;
    anything else needs --overwrite."""
    if not output.exists():
        return
    if not output.is_dir():
        raise UserError(f"{output}: output path exists and is not a directory")
    saved = RunDir(output).config
    if overwrite:
        if any(output.iterdir()) and not saved.is_file():
            raise UserError(f"{output}: not a meap demo directory; refusing to delete it (choose another --output)")
        shutil.rmtree(output)
        return
    if saved.is_file() and saved_config(type(config), saved) != config_to_dict(config):
        raise UserError(f"{output}: holds a demo with another configuration; pass --overwrite to start over")
    if not saved.is_file() and any(output.iterdir()):
        raise UserError(f"{output}: directory is not empty and holds no demo; choose another --output")


def start_experiment(config, overwrite: bool) -> tuple[Path, float]:
    """Claim the experiment's directory (:func:`check_output`) and write its config.yaml; returns the directory
    and the start time (``time.monotonic``)."""
    output = config.resolved_output()
    check_output(config, output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, RunDir(output).config)
    return output, time.monotonic()


def run_demo(config: DemoConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every stage for ``config`` and return the summary (also in ``demo.json``)."""
    from meap.paired import paired_comparison, write_paired_report
    from meap.report import compare_runs

    output, started = start_experiment(config, overwrite)
    objectives, seeds = config.objectives(), config.training_seeds()
    clock = lambda: f"{time.monotonic() - started:5.0f} s"  # noqa: E731

    say(f"{clock()}  1/4 corpus and evaluation files")
    mdqa_files = _mdqa_files(config, output / "mdqa")
    haystack = _haystack(config, output)
    data, warmup = _prepare(config, output, _held_out_values(config, mdqa_files), progress)
    runs: dict[int, dict[str, Path]] = {seed: {} for seed in seeds}
    for number, (seed, objective) in enumerate(((s, o) for s in seeds for o in objectives), 1):
        stages = f"{config.copy_warmup_steps} warm-up + " if warmup else ""
        say(f"{clock()}  2/4 training {objective.upper()}, seed {seed} ({number} of {len(seeds) * len(objectives)}): "
             f"{config.model}, {stages}{config.max_steps} steps")
        runs[seed][objective] = _train(config, objective, seed, data, warmup, output, progress)
    for seed_runs in runs.values():
        for run in seed_runs.values():
            say(f"{clock()}  3/4 evaluating {run.relative_to(output)}: NIAH, MDQA, attention")
            _evaluate(config, run, _key_check_dir(output, run), mdqa_files, haystack, progress)
        if len(seed_runs) > 1:
            _attention(config, list(seed_runs.values()), next(iter(seed_runs.values())).parent / "attention",
                       haystack, progress)
    say(f"{clock()}  4/4 report")
    reports = {seed: str(compare_runs(list(seed_runs.values()), next(iter(seed_runs.values())).parent / "report"))
               for seed, seed_runs in runs.items() if len(seed_runs) > 1}
    key_checks = {seed: {objective: _key_check_dir(output, run) for objective, run in seed_runs.items()}
                  for seed, seed_runs in runs.items()} if config.key_check else None
    summary = {"runs": {str(run.relative_to(output)): _headline(run) for seed_runs in runs.values()
                        for run in seed_runs.values()},
               "wall_seconds": round(time.monotonic() - started, 1),
               "report": reports[seeds[0]] if len(reports) == 1 else reports or None}
    if len(objectives) == 2 and "ntp" in objectives:
        comparison = paired_comparison(runs, key_checks)
        summary.update(comparison=comparison)
        write_paired_report(comparison, output)
    atomic_write_json(output / SUMMARY_FILE, summary)
    if config.summary and "comparison" in summary:
        _write_evidence(config, summary, output)
    _print_summary(summary)
    return summary


def publish_summary(path: Path, summary: dict, tables: str, figure: Path | None = None) -> None:
    """A summary JSON outside the demo directory (e.g. ``results/``), its tables beside it (``.md``) and the
    figure they show (``.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_lines(path, [json.dumps(summary, indent=2)])
    if figure is not None:
        shutil.copyfile(figure, path.with_suffix(".png"))
        tables = tables.replace(figure.name, path.with_suffix(".png").name)
    atomic_write_lines(path.with_suffix(".md"), [tables])


def _write_evidence(config: DemoConfig, summary: dict, output: Path) -> None:
    """``config.summary``: the comparison with the machine, the recipe and the wall time; tables beside it."""
    from meap.monitor import machine

    comparison = summary["comparison"]
    evidence = {"niah_by_seed": comparison["niah"]["by_seed"],
                "difference_ci95": comparison["niah"]["paired"]["ci95"],
                **comparison,
                "wall_seconds": summary["wall_seconds"], "machine": machine(),
                "config": config_to_dict(config), "demo_dir": str(output)}
    publish_summary(Path(config.summary), evidence, (output / COMPARISON_FILE).read_text(encoding="utf-8"),
                    output / "comparison.png")


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


def _print_summary(summary: dict) -> None:
    def cell(value, percent=False):
        if value is None:
            return "n/a"
        return f"{100 * value:.1f}%" if percent else f"{value:.3f}"

    width = max(6, *(len(name) for name in summary["runs"]))
    print(f"\n{'run':<{width}} {'loss':>7} {'val loss':>9} {'NIAH':>7} {'MDQA':>7} {'attn→needle':>12}")
    for name, row in summary["runs"].items():
        print(f"{name:<{width}} {cell(row['final_loss']):>7} {cell(row['final_val_loss']):>9} "
              f"{cell(row['niah_substring'], True):>7} {cell(row['mdqa_accuracy'], True):>7} "
              f"{cell(row['attention_on_needle']):>12}")
    comparison = summary.get("comparison")
    if comparison:
        for name in ("niah", "mdqa"):
            paired = comparison[name]["paired"]
            low, high = paired["ci95"]
            print(f"{name.upper()} MEAP - NTP: {100 * paired['difference']:+.1f} points "
                  f"(95% CI {100 * low:+.1f} to {100 * high:+.1f}; {paired['seeds']} seed(s) x {paired['prompts']} prompts)")
    report = summary["report"]
    where = report if isinstance(report, str) or report is None else ", ".join(report.values())
    print(f"\n{summary['wall_seconds']:.0f} s in all; report: {where or 'n/a (one run)'}")
