"""Contextual hallucination in summaries (``meap eval hallucination``): one evaluation kind, whole.

The protocol of Lookback-Lens, which the Differential Transformer and MEAP papers follow: the model summarises
each document greedily (a chat model through its chat template), and a judge LLM (:mod:`meap.eval.judge`) reads
the document, the reference summary and the proposed one, explains and gives a verdict: fully supported by the
document, or not. The score is the share of faithful summaries with its 95% Wilson interval; a verdict that
cannot be read counts as not faithful and is counted on its own (``unparsed``). Beside it, always, and labelled
as proxies: ROUGE-1/2/L against the reference and the share of the summaries' numbers and named entities not
found in the document (a spaCy pipeline where one is installed, else :data:`meap.eval.metrics.ENTITY_RULE`).

Input: JSONL(.gz) or a saved ``datasets`` dataset with XSum's, MultiNews', CNN/DailyMail's or WikiSum's fields
(or ``--document-field``/``--summary-field``); ``--summaries`` judges summaries made elsewhere instead.
Summaries and verdicts are cached in the output directory as they arrive (an interrupted evaluation resumes
without asking again); ``summary.json`` is written last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from meap.config import checked
from meap.config.commands import MODEL_HELP, GenerationOptions, option
from meap.errors import UserError, warn
from meap.eval.kind import EvaluationKind, by_label, format_value, section, write_records
from meap.eval.summaries_data import read_documents, read_summaries

INSTRUCTION = "Summarise the article below in one sentence."
CACHE_FILE = "cache.jsonl"  # summaries and judge answers, a line each as they arrive
NER_AUTO_PIPELINE = "en_core_web_sm"


@dataclass
class HallucinationConfig(GenerationOptions):
    model: str = option(MODEL_HELP + " (the summariser; not needed with --summaries)", "", metavar="MODEL")
    data: str = option(
        "documents with reference summaries: JSONL(.gz) or a saved `datasets` dataset (XSum's document/summary, "
        "CNN/DailyMail's article/highlights, MultiNews', WikiSum's article/summary)",
        "",
        required=True,
        metavar="PATH",
    )
    output: str = option("directory for results.jsonl and summary.json", "", short="-o", required=True)
    document_field: str | None = option("the documents' field (default: detected)", metavar="KEY")
    summary_field: str | None = option("the reference summaries' field (default: detected)", metavar="KEY")
    summaries: str | None = option(
        "JSONL of `id`, `summary`: judge summaries made elsewhere instead of generating them", metavar="FILE"
    )
    limit: int | None = option("documents taken from the start (default: all)")
    instruction: str = option("what the summariser is asked", INSTRUCTION, metavar="TEXT")
    max_new_tokens: int = option("longest summary generated", 64)
    judge_url: str | None = option(
        "an OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, `transformers serve`, llama.cpp, OpenAI)",
        metavar="URL",
        exclusive="judge",
    )
    judge_model: str | None = option("the model name the endpoint serves (with --judge-url)", metavar="NAME")
    judge_api_key_env: str = option(
        "the environment variable holding the endpoint's API key (never written)", "OPENAI_API_KEY", metavar="VAR"
    )
    judge: str | None = option(
        "a local judge model, run in-process (" + MODEL_HELP + ")", metavar="MODEL", exclusive="judge"
    )
    judge_prompt: str | None = option(
        "a judge prompt file with {document}, {summary} and optionally {reference} (default: meap's own)",
        metavar="FILE",
    )
    judge_max_tokens: int = option("longest judge answer", 512)
    judge_concurrency: int = option("requests in flight at once (--judge-url)", 4)
    judge_retries: int = option("retries of a failed request, with backoff (--judge-url)", 3)
    judge_timeout: float = option("seconds a request may take (--judge-url)", 120.0, metavar="SECONDS")
    ner: str = option(
        f"named entities for the proxy: auto (spaCy's {NER_AUTO_PIPELINE} where installed, else the rule), rule, "
        "or a spaCy pipeline's name or directory",
        "auto",
        metavar="NER",
    )

    def problems(self) -> list[str]:
        found = GenerationOptions.problems(self)
        if not self.model and not self.summaries:
            found.append("hallucination: give --model (the summariser) or --summaries (summaries made elsewhere)")
        if self.judge_url and not self.judge_model:
            found.append("--judge-url needs --judge-model (the name the endpoint serves)")
        if self.judge_url and self.judge:
            found.append("--judge-url and --judge exclude each other; give one judge")
        if self.judge_model and not self.judge_url:
            found.append("--judge-model goes with --judge-url")
        if self.limit is not None and self.limit < 1:
            found.append(f"--limit: expected at least 1, got {self.limit}")
        for name in ("judge_max_tokens", "judge_concurrency"):
            if getattr(self, name) < 1:
                found.append(f"--{name.replace('_', '-')}: expected at least 1, got {getattr(self, name)}")
        if self.judge_retries < 0 or self.judge_timeout <= 0:
            found.append("--judge-retries must be 0 or more and --judge-timeout above 0")
        return found


def entity_extractor(ner: str):
    """(name, function text -> entities): a spaCy pipeline's entities, or :func:`~meap.eval.metrics.rule_entities`."""
    from meap.eval.metrics import rule_entities

    if ner == "rule":
        return "rule", rule_entities
    try:
        import spacy
    except ImportError:
        if ner == "auto":
            return "rule", rule_entities
        raise UserError(f"--ner {ner}: spaCy is not installed (pip install spacy)") from None
    name = NER_AUTO_PIPELINE if ner == "auto" else ner
    try:
        nlp = spacy.load(name)
    except OSError:
        if ner == "auto":
            return "rule", rule_entities
        raise UserError(
            f"--ner {ner}: no such spaCy pipeline (a package name or a directory from nlp.to_disk)"
        ) from None
    return f"spacy:{name}", lambda text: [entity.text for entity in nlp(text).ents]


def _judge(config: HallucinationConfig):
    from meap.eval.judge import LocalJudge, ServerJudge

    if config.judge_url:
        return ServerJudge(
            config.judge_url,
            config.judge_model,
            api_key_env=config.judge_api_key_env,
            retries=config.judge_retries,
            timeout=config.judge_timeout,
            concurrency=config.judge_concurrency,
        )
    if config.judge:
        return LocalJudge(
            config.judge, dtype=config.dtype, batch_size=config.batch_size, progress=not config.no_progress
        )
    return None


def evaluate(config: HallucinationConfig) -> dict:
    """Summarise (or read) and judge every document of ``config.data``; writes ``results.jsonl`` and
    ``summary.json`` to ``config.output`` and returns the summary. Without a judge, the proxies alone."""
    from meap.eval.judge import AnswerCache, parse_verdict, prompt_sha256, read_prompt_template
    from meap.eval.metrics import ENTITY_RULE, rouge_scores, unsupported_entities
    from meap.stats import wilson_interval

    checked(config)
    examples = read_documents(config.data, config.document_field, config.summary_field, config.limit)
    template = read_prompt_template(config.judge_prompt)
    entity_source, entities_of = entity_extractor(config.ner)
    judge = _judge(config)
    if judge is not None:
        judge.check()  # before anything is generated: an unreachable judge stops here, nothing written
    output = Path(config.output)
    cache = AnswerCache(output / CACHE_FILE)
    skipped = 0
    if config.summaries:
        made = read_summaries(config.summaries)
        missing = [e["id"] for e in examples if e["id"] not in made]
        if missing:
            raise UserError(f"{config.summaries}: no summary for id {missing[0]!r} (and {len(missing) - 1} more)")
        for example in examples:
            example["summary"] = made[example["id"]]
    else:
        examples, skipped = _summarise(config, examples, cache)
    if judge is not None:
        prompts = {}
        for example in examples:
            prompt = template.format(
                document=example["document"], reference=example["reference"], summary=example["summary"]
            )
            example["judge_key"] = AnswerCache.key("judge", json.dumps(judge.describe(), sort_keys=True), prompt)
            if example["judge_key"] not in cache.answers:
                prompts[example["judge_key"]] = prompt
        judge.answer(prompts, config.judge_max_tokens, cache.put)
    records = []
    for example in examples:
        judge_text = cache.answers[example["judge_key"]] if judge is not None else None
        verdict = parse_verdict(judge_text) if judge is not None else None
        entities = entities_of(example["summary"])
        records.append(
            {
                "id": example["id"],
                "summary": example["summary"],
                "reference": example["reference"],
                "verdict": verdict,
                "faithful": None if judge is None else float(verdict is True),
                "judge_text": judge_text,
                "entities": entities,
                "unsupported": unsupported_entities(entities, example["document"]),
                **rouge_scores(example["summary"], example["reference"]),
            }
        )
    if judge is not None and all(record["verdict"] is None for record in records):
        raise UserError(
            f"hallucination: the judge gave no verdict the rule can read in any of {len(records)} answers (first: "
            f"{' '.join(records[0]['judge_text'].split())[:120]!r}); use a stronger judge or --judge-prompt"
        )
    entity_count = sum(len(record["entities"]) for record in records)
    summary = {
        "model": config.model or None,
        "data": config.data,
        "examples": len(records),
        "skipped_too_long": skipped,
        "unsupported_entity_rate": sum(len(r["unsupported"]) for r in records) / entity_count if entity_count else None,
        "entities": entity_count,
        "entity_source": entity_source,
        "entity_rule": ENTITY_RULE if entity_source == "rule" else None,
        **{
            name.replace("rouge", "rouge_").lower(): _mean([r[name] for r in records])
            for name in ("rouge1", "rouge2", "rougeL")
        },
        "proxies": "ROUGE and unsupported entities are judge-free proxies, not verdicts",
        "config": {
            "summaries": config.summaries,
            "limit": config.limit,
            "instruction": config.instruction,
            "max_new_tokens": config.max_new_tokens,
            "batch_size": config.batch_size,
        },
    }
    if judge is None:
        warn("hallucination: no judge given (--judge-url with --judge-model, or --judge): the proxies alone")
        summary.update(faithful_rate=None, ci95=None, unparsed=None, judge=None)
    else:
        faithful = sum(r["verdict"] is True for r in records)
        summary.update(
            faithful_rate=faithful / len(records),
            ci95=list(wilson_interval(faithful, len(records))),
            unparsed=sum(r["verdict"] is None for r in records),
            judge={**judge.describe(), "max_tokens": config.judge_max_tokens, "prompt_sha256": prompt_sha256(template)},
        )
    output.mkdir(parents=True, exist_ok=True)
    write_records(output, records)
    return KIND.write_summary(output, summary)


def _summarise(config: HallucinationConfig, examples: list[dict], cache) -> tuple[list[dict], int]:
    """The examples whose prompt fits the model, each with its greedy ``summary`` (cached); and how many did not fit."""
    from meap.eval.generation import generate, prompt_length
    from meap.models import load_causal_lm

    model, tokenizer = load_causal_lm(config.model, dtype=config.dtype)
    positions = getattr(model.config, "max_position_embeddings", None)
    fitting = []
    for example in examples:
        example["prompt"] = f"{config.instruction}\n\nArticle: {example['document']}\n\nSummary:"
        if not positions or prompt_length(tokenizer, example["prompt"]) + config.max_new_tokens <= positions:
            fitting.append(example)
    if not fitting:
        raise UserError(
            f"hallucination: no document fits the {positions} positions of `{config.model}` with "
            f"{config.max_new_tokens} new tokens (use shorter documents or a longer-context model)"
        )
    if len(fitting) < len(examples):
        warn(
            f"hallucination: skipped {len(examples) - len(fitting)} of {len(examples)} documents longer than "
            "the model's context"
        )
    for example in fitting:
        example["summary_key"] = cache.key("summary", config.model, str(config.max_new_tokens), example["prompt"])
    todo = [example for example in fitting if example["summary_key"] not in cache.answers]
    chunk = config.batch_size * 4  # summaries reach the cache a few batches at a time
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        texts = generate(
            model,
            tokenizer,
            [e["prompt"] for e in part],
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            progress=not config.no_progress,
            description="summarising",
        )
        for example, text in zip(part, texts):
            cache.put(example["summary_key"], text)
    for example in fitting:
        example["summary"] = cache.answers[example["summary_key"]]
    return fitting, len(examples) - len(fitting)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def headline(summary: dict, output: str | Path) -> str:
    proxies = (
        f"unsupported entities {format_value(summary['unsupported_entity_rate'])}, ROUGE-L {summary['rouge_l']:.3f} "
        "(proxies)"
    )
    if summary["faithful_rate"] is None:
        return f"hallucination: no judge; {proxies} over {summary['examples']} summaries -> {output}"
    low, high = summary["ci95"]
    return (
        f"hallucination: faithful {summary['faithful_rate']:.3f} [{low:.3f}, {high:.3f}] over {summary['examples']} "
        f"summaries ({summary['unparsed']} verdicts unread); {proxies} -> {output}"
    )


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    title = "Contextual hallucination (summaries judged by an LLM; ROUGE and entities are proxies)"
    for _, heading, view in by_label(loaded, KIND.name, title):
        found = section(blocks, view, KIND.name, heading)
        if found:
            blocks.append(
                (
                    "table",
                    [
                        "run",
                        "faithful [95% Wilson]",
                        "verdicts unread",
                        "unsupported entities",
                        "ROUGE-1",
                        "ROUGE-2",
                        "ROUGE-L",
                        "summaries",
                        "judge",
                    ],
                    [
                        [
                            name,
                            "n/a (no judge)"
                            if s["faithful_rate"] is None
                            else f"{s['faithful_rate']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]",
                            format_value(s["unparsed"]),
                            format_value(s["unsupported_entity_rate"]),
                            *[format_value(s[key]) for key in ("rouge_1", "rouge_2", "rouge_l")],
                            str(s["examples"]),
                            (s["judge"] or {}).get("model", "none"),
                        ]
                        for name, s in found.items()
                    ],
                )
            )


KIND = EvaluationKind(
    "hallucination",
    "summary.json",
    headline,
    report_section,
    paired_score=("faithful", "faithful summaries (LLM judge)"),
    paper_rows=lambda s: {
        "faithful summaries (LLM judge)": s["faithful_rate"],
        "unsupported entities in summaries (proxy)": s["unsupported_entity_rate"],
    },
    paper={
        "faithful summaries (LLM judge)": "MEAP hallucinates less than NTP (XSum, MultiNews, WikiSum; no number in "
        "the spec)"
    },
    command=("eval", "hallucination"),
    help="contextual hallucination in summaries, judged by an LLM (Lookback-Lens' protocol), with proxies",
    config=HallucinationConfig,
    evaluate=evaluate,
)
