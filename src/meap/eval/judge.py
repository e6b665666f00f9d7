"""An LLM judge of summaries: its prompt, how its verdict is read, and the two ways to ask it.

The protocol is Lookback-Lens' (used by the Differential Transformer and MEAP papers for contextual
hallucination), in meap's own words (:data:`JUDGE_PROMPT`): the judge reads the document, the reference summary
and the proposed summary, explains, and ends with a verdict line. :func:`parse_verdict` reads it: the last
``Verdict: supported|unsupported`` (or Lookback-Lens' ``Conclusion: True|False``) line, else the first plain
statement "the summary is (not) supported"; anything else is no verdict (None).

Judges: :class:`ServerJudge`, any OpenAI-compatible chat endpoint through the ``openai`` client (vLLM, SGLang,
TGI, ``transformers serve``, llama.cpp's server, OpenAI), with concurrent requests and the client's own retries
with backoff; :class:`LocalJudge`, a local model run in-process. Every answer is kept in a :class:`AnswerCache`
(a JSON-lines file in the output directory, a line per answer as it arrives), so an interrupted evaluation
asks again only what it lacks. The API key is read from the environment and never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from meap.errors import UserError

JUDGE_PROMPT = """You check a summary for contextual hallucination: statements that the document it summarises \
does not support.

Document:
{document}

Reference summary (written by a person):
{reference}

Proposed summary:
{summary}

Is everything the proposed summary states supported by the document? It may differ from the reference and still \
be fully supported; any name, number, date, place, event or claim that the document does not support makes it \
unsupported. Judge by the document alone, not by what you know.
Explain briefly, then end with one line: "Verdict: supported" or "Verdict: unsupported"."""
PROMPT_FIELDS = ("document", "reference", "summary")

_VERDICT_LINE = re.compile(
    r"(?:verdict|conclusion)\W{0,4}\s*(supported|unsupported|not supported|true|false)\b", re.IGNORECASE
)
_PLAIN_STATEMENT = re.compile(r"\bsummary is (not |un)?(?:fully |completely |entirely )?supported\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """True (supported), False (anything unsupported) or None (no verdict found) from a judge's answer."""
    marked = _VERDICT_LINE.findall(text or "")
    if marked:
        return marked[-1].lower() in ("supported", "true")
    plain = _PLAIN_STATEMENT.search(text or "")
    return None if plain is None else not plain.group(1)


def read_prompt_template(path: str | None) -> str:
    """The judge prompt: meap's own, or a file's with the fields ``{document}``, ``{reference}``, ``{summary}``."""
    if path is None:
        return JUDGE_PROMPT
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such judge prompt file")
    template = file.read_text(encoding="utf-8")
    fields = set(re.findall(r"(?<!\{)\{(\w+)\}(?!\})", template))
    if not {"document", "summary"} <= fields or fields - set(PROMPT_FIELDS):
        raise UserError(
            f"{path}: a judge prompt needs the fields {{document}} and {{summary}} (and may use {{reference}}); "
            f"found {', '.join(sorted(fields)) or 'none'}"
        )
    return template


def prompt_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


class AnswerCache:
    """Answers by key in a JSON-lines file, appended one line per answer as it arrives (a line cut short by an
    interruption is ignored on reading), so that an interrupted evaluation resumes without asking again."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("answer"), str):
                    self.answers[entry["key"]] = entry["answer"]

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()

    def put(self, key: str, answer: str) -> None:
        with self._lock:
            self.answers[key] = answer
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")


class ServerJudge:
    """A judge behind an OpenAI-compatible chat endpoint, asked greedily (temperature 0)."""

    def __init__(self, url: str, model: str, *, api_key_env: str, retries: int, timeout: float, concurrency: int):
        from openai import OpenAI

        key = os.environ.get(api_key_env)
        if key is None and api_key_env != "OPENAI_API_KEY":
            raise UserError(f"--judge-api-key-env: the environment variable {api_key_env} is not set")
        # local servers take any key; the client insists on one
        self.client = OpenAI(base_url=url, api_key=key or "EMPTY", max_retries=retries, timeout=timeout)
        self.url, self.model, self.retries, self.concurrency = url, model, retries, concurrency
        self.settings = {"temperature": 0.0}

    def describe(self) -> dict:
        return {"kind": "server", "url": self.url, "model": self.model, **self.settings}

    def _ask(self, prompt: str, max_tokens: int) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, **self.settings
            )
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise UserError(f"judge {self.url}: unreachable after {self.retries} retries ({error})") from None
        except openai.APIStatusError as error:
            raise UserError(
                f"judge {self.url}: the server answered {error.status_code} ({_first_line(error)})"
            ) from None
        return response.choices[0].message.content or ""

    def check(self) -> None:
        """One short request, so that an unreachable judge stops the evaluation before anything is generated."""
        self._ask("Reply with the word OK.", 1)

    def answer(self, prompts: dict[str, str], max_tokens: int, done: Callable[[str, str], None]) -> None:
        """Ask every prompt (key -> prompt) concurrently; ``done(key, answer)`` as each arrives."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._ask, prompt, max_tokens): key for key, prompt in prompts.items()}
            try:
                for future in as_completed(futures):
                    done(futures[future], future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


class LocalJudge:
    """A local model (any ``--model`` spec) as the judge, run in-process, greedily, its prompts batched."""

    def __init__(self, spec: str, *, dtype: str, batch_size: int, progress: bool):
        from meap.models import load_causal_lm

        self.spec, self.batch_size, self.progress = spec, batch_size, progress
        self.model, self.tokenizer = load_causal_lm(spec, dtype=dtype)
        self.settings = {"temperature": 0.0}

    def describe(self) -> dict:
        return {"kind": "local", "model": self.spec, **self.settings}

    def check(self) -> None:
        pass

    def fits(self, prompt: str, max_tokens: int) -> bool:
        from meap.eval.generation import prompt_length

        positions = getattr(self.model.config, "max_position_embeddings", None)
        return not positions or prompt_length(self.tokenizer, prompt) + max_tokens <= positions

    def answer(self, prompts: dict[str, str], max_tokens: int, done: Callable[[str, str], None]) -> None:
        from meap.eval.generation import generate

        keys = list(prompts)
        chunk = self.batch_size * 4  # answers reach the cache a few batches at a time
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            answers = generate(
                self.model,
                self.tokenizer,
                [prompts[key] for key in part],
                max_new_tokens=max_tokens,
                batch_size=self.batch_size,
                progress=self.progress,
                description="judging",
            )
            for key, answer in zip(part, answers):
                done(key, answer)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
