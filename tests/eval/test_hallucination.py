"""Contextual hallucination in summaries: real XSum articles (../shared/data), a real judge server
(`transformers serve` on 127.0.0.1), a local judge, and the judge-free proxies."""

import gzip
import json
import re

import pytest

from meap.cli import main
from meap.errors import UserError
from meap.eval.hallucination import HallucinationConfig, evaluate
from meap.eval.judge import JUDGE_PROMPT, parse_verdict, prompt_sha256
from meap.eval.kind import read_records
from meap.eval.summaries_data import read_documents

from conftest import tiny_llama

# A prompt a 135M judge answers with a readable verdict (meap's own asks it to explain first, which it cannot)
SHORT_PROMPT = (
    "Document:\n{document}\n\nSummary:\n{summary}\n\nIs the summary supported by the document? "
    "Reply with one word: Verdict: supported, or Verdict: unsupported."
)
SECRET = "sk-meap-test-never-written"


@pytest.fixture(scope="module")
def xsum(shared_data):
    return shared_data / "xsum" / "xsum-1000.jsonl.gz"


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", " ".join(text.split()), maxsplit=1)[0]


def summaries_file(path, xsum, make, count):
    examples = read_documents(xsum, limit=count)
    path.write_text("".join(json.dumps({"id": e["id"], "summary": make(e)}) + "\n" for e in examples))
    return str(path)


def prompt_file(tmp_path):
    path = tmp_path / "judge.txt"
    path.write_text(SHORT_PROMPT)
    return str(path)


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("The summary adds a date.\nVerdict: unsupported", False),
        ("Everything is in the article.\n\nVerdict: Supported", True),
        ("**Conclusion: False**\n**Problematic Spans: ['Paris']**", False),
        ("Verdict: supported. On reflection, no.\nVerdict: not supported", False),  # the last verdict line
        ("The summary is not supported by the document.", False),
        ("The summary is fully supported by the document.", True),
        ("The article describes a fire in a warehouse.", None),
        ("", None),
    ],
)
def test_a_verdict_is_read_from_its_line_else_from_a_plain_statement(text, verdict):
    assert parse_verdict(text) is verdict


def test_the_real_xsum_file_reads_and_other_layouts_are_detected(xsum, tmp_path):
    examples = read_documents(xsum)
    assert len(examples) == 1000 and all(e["document"] and e["reference"] and e["id"] for e in examples)
    import datasets

    datasets.Dataset.from_dict({"article": ["A long article."], "highlights": ["An article."]}).save_to_disk(
        tmp_path / "cnndm"
    )
    assert read_documents(tmp_path / "cnndm") == [
        {"id": "0", "document": "A long article.", "reference": "An article."}
    ]
    (tmp_path / "own.jsonl").write_text(json.dumps({"body": "Text here.", "tldr": "Text."}) + "\n")
    with pytest.raises(UserError, match="no known field pair"):
        read_documents(tmp_path / "own.jsonl")
    assert read_documents(tmp_path / "own.jsonl", "body", "tldr")[0]["reference"] == "Text."


def test_copied_summaries_have_no_unsupported_entities_and_invented_ones_do(xsum, tmp_path):
    copied = evaluate(
        HallucinationConfig(
            data=str(xsum),
            output=str(tmp_path / "copied"),
            summaries=summaries_file(tmp_path / "copied.jsonl", xsum, lambda e: first_sentence(e["document"]), 30),
            limit=30,
            ner="rule",
        )
    )
    assert copied["entities"] > 30 and copied["unsupported_entity_rate"] == 0.0
    assert copied["faithful_rate"] is None and copied["entity_source"] == "rule"
    invented = evaluate(
        HallucinationConfig(
            data=str(xsum),
            output=str(tmp_path / "invented"),
            summaries=summaries_file(
                tmp_path / "invented.jsonl",
                xsum,
                lambda e: first_sentence(e["document"]) + " Odrin Castellane paid 48,917 pounds in Velmora.",
                30,
            ),
            limit=30,
            ner="rule",
        )
    )
    assert invented["unsupported_entity_rate"] > 0
    for record in read_records(tmp_path / "invented" / "results.jsonl"):
        assert {"Odrin Castellane", "48,917", "Velmora"} <= set(record["unsupported"])
    assert copied["rouge_l"] > 0 and 0 <= invented["rouge_1"] <= 1


def test_a_spacy_pipeline_names_the_entities_when_given(xsum, tmp_path):
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "GPE", "pattern": "Velmora"}])
    nlp.to_disk(tmp_path / "ner")
    summary = evaluate(
        HallucinationConfig(
            data=str(xsum),
            output=str(tmp_path / "out"),
            summaries=summaries_file(tmp_path / "s.jsonl", xsum, lambda e: "Rain fell on Velmora and Paris.", 3),
            limit=3,
            ner=str(tmp_path / "ner"),
        )
    )
    assert summary["entity_source"] == f"spacy:{tmp_path / 'ner'}" and summary["entity_rule"] is None
    assert summary["entities"] == 3 and summary["unsupported_entity_rate"] == 1.0  # "Paris" is no pattern


def requests(log) -> int:
    return log.read_text().count('"POST /v1/chat/completions')


def test_a_judge_server_judges_generated_summaries_and_a_resume_asks_only_what_it_lacks(
    xsum, judge_server, gpt2_tokenizer, tmp_path, monkeypatch
):
    url, served, log = judge_server
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    summariser = tmp_path / "tiny"
    tiny_llama(len(gpt2_tokenizer), max_positions=2048).save_pretrained(summariser)
    gpt2_tokenizer.save_pretrained(summariser)
    output = tmp_path / "out"
    config = HallucinationConfig(
        model=str(summariser), data=str(xsum), output=str(output), limit=4, max_new_tokens=16,
        judge_url=url, judge_model=served, judge_prompt=prompt_file(tmp_path), judge_max_tokens=16,
    )  # fmt: skip
    before = requests(log)
    summary = evaluate(config)
    assert requests(log) - before == 1 + 4  # the reachability check, then one verdict per summary
    records = read_records(output / "results.jsonl")
    assert len(records) == summary["examples"] == 4 and all(r["judge_text"] for r in records)
    verdicts = [r["verdict"] for r in records]
    assert summary["faithful_rate"] == verdicts.count(True) / 4 and summary["unparsed"] == verdicts.count(None)
    assert [r["faithful"] for r in records] == [float(v is True) for v in verdicts]
    assert summary["judge"] == {
        "kind": "server", "url": url, "model": served, "temperature": 0.0, "max_tokens": 16,
        "prompt_sha256": prompt_sha256(SHORT_PROMPT),
    }  # fmt: skip
    assert all(SECRET not in path.read_text() for path in output.iterdir())

    # interrupted after two verdicts: only the other two are asked again, the summaries are not made again
    cache = output / "cache.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 8  # 4 summaries, then 4 verdicts
    cache.write_text("\n".join(lines[:6]) + "\n" + lines[6][:20])  # the last verdicts lost, one line cut short
    (output / "summary.json").unlink()
    before = requests(log)
    again = evaluate(config)
    assert requests(log) - before == 1 + 2
    assert [r["summary"] for r in read_records(output / "results.jsonl")] == [r["summary"] for r in records]
    assert again["faithful_rate"] == summary["faithful_rate"]


def test_a_judge_with_no_readable_verdict_is_one_line_and_writes_no_results(xsum, judge_server, tmp_path, capsys):
    url, served, _ = judge_server
    made = summaries_file(tmp_path / "s.jsonl", xsum, lambda e: e["reference"], 2)
    output = tmp_path / "out"
    argv = ["eval", "hallucination", "--data", str(xsum), "--summaries", made, "--limit", "2", "-o", str(output)]
    with pytest.raises(SystemExit) as exit_info:  # meap's own prompt asks for an explanation first: 4 tokens of it
        main([*argv, "--judge-url", url, "--judge-model", served, "--judge-max-tokens", "4"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "the judge gave no verdict the rule can read in any of 2 answers" in error[0]
    assert not (output / "summary.json").exists() and not (output / "results.jsonl").exists()


def test_a_local_judge_runs_in_process(xsum, tmp_path, capsys):
    made = summaries_file(tmp_path / "s.jsonl", xsum, lambda e: e["reference"], 2)
    output = tmp_path / "out"
    argv = ["eval", "hallucination", "--data", str(xsum), "--summaries", made, "--limit", "2", "-o", str(output)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--judge", "smollm2-135m", "--judge-prompt", prompt_file(tmp_path), "--judge-max-tokens", "16"])
    assert exit_info.value.code == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["kind"] == "hallucination" and summary["judge"]["kind"] == "local"
    assert summary["judge"]["prompt_sha256"] == prompt_sha256(SHORT_PROMPT) != prompt_sha256(JUDGE_PROMPT)
    assert "hallucination: faithful" in capsys.readouterr().out
    with gzip.open(xsum, "rt") as lines:  # the reference summaries, judged against their own articles
        assert [json.loads(next(lines))["id"] for _ in range(2)] == [
            r["id"] for r in read_records(output / "results.jsonl")
        ]
