"""Prepare a corpus: documents → token ids → train/val shards in a prepared directory (layout: meap.data.shards).

:func:`prepare_corpus` runs four steps:

1. **resolve** the inputs (every missing path or bad option is reported before any work), then load or train
   the tokenizer and save it;
2. **tokenize**: documents go in batches to ``num_proc`` worker processes, each holding the tokenizer;
   results come back in input order and are appended, each document followed by EOS, to one temporary
   stream file. Text that spells a special token (``<|endoftext|>``, ``[MASK]``) is encoded as ordinary text,
   so EOS marks document ends only and ``[MASK]`` never appears in the data;
3. **split** the stream into train and val shards by the rule below, then delete it;
4. **publish**: all of this happens in a staging directory beside the output (``.NAME.tmp-PID``) that is
   renamed into place at the end, so an interrupted run leaves nothing at the output path, and the next
   run deletes staging directories whose process is gone.

Validation split (deterministic, disjoint from train, never empty), for D documents, N tokens, fraction f:

* ``⌊D·f⌋ ≥ 1``, and those documents hold about the small-corpus minimum below (90% of it): whole
  documents. Document i (0-based) goes to val iff ``⌊(i+1)·f⌋ > ⌊i·f⌋``: one in
  every 1/f, evenly spread (i = 199, 399, … at f = 0.005). No document is cut.
* otherwise (fewer than 1/f documents, e.g. the 108 of the built-in corpus, or a few long ones):
  ``V = max(1, round(N·f))`` tokens of the stream, in ``k = max(1, V // 2048)`` equal pieces, piece p
  ending at ``⌊N·(p+1)/k⌋``, so val samples the whole corpus. A piece may cut a document; nothing is
  inserted at the cut.

On a small corpus f is first raised so that val holds about ``min(8192, N/10)`` tokens (32 sequences of
256, or a tenth of the corpus; ``min_val_tokens`` sets the 8192): enough for a validation loss, where 0.5%
of 200 KB would be one sequence.
``meta.json`` records the fraction asked for (``val_fraction``) and the one used (``val_fraction_used``).

The stream is written whole before splitting because the rule needs D, known only at the end; copying the
tokens once more costs little next to tokenizing them.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from meap.config import checked
from meap.config.commands import PrepareConfig
from meap.data.builtin import BUILTIN_VERSION
from meap.data.shards import FORMAT, META_FILE, TOKENIZER_DIR, VERSION, ShardWriter, load_meta, token_dtype, write_meta
from meap.data.sources import Corpus, open_corpus
from meap.errors import UserError, warn
from meap.fsutil import default_cache_dir, fresh_staging_dir, publish_dir

DEFAULT_TOKENIZER = "gpt2"
BATCH_DOCUMENTS = 1000
BATCH_BYTES = 1 << 20
VAL_PIECE_TOKENS = 2048
MIN_VAL_TOKENS = 8192  # what a small corpus holds out at least (capped at MAX_SMALL_VAL_SHARE of it)
MAX_SMALL_VAL_SHARE = 0.1
SPLIT_BLOCK_TOKENS = 1 << 22
_STREAM_FILE = "stream.tmp"


def prepare_corpus(
    config: PrepareConfig,
    *,
    min_val_tokens: int = MIN_VAL_TOKENS,
    shard_tokens: int = 100_000_000,
    progress: bool = True,
    summary: bool | None = None,
) -> Path:
    """Tokenize ``config.inputs`` into a prepared directory at ``config.output`` and return its path.

    The keys are :class:`~meap.config.commands.PrepareConfig`'s (``meap prepare``'s flags). ``num_proc``:
    tokenizing processes (default ``min(cpu_count, 8)``; 1 tokenizes in this process, on all cores through the
    tokenizer's own threads); workers are started with ``spawn``, so a script calling this needs
    ``if __name__ == "__main__":``. ``overwrite``: replace an existing prepared directory (anything else at
    ``output`` is never replaced). ``skip_bad_lines``: bad JSON Lines lines are counted in ``meta.json``'s
    ``skipped_lines`` and the first few named in a warning.
    ``min_val_tokens``: on a small corpus, hold out about this many tokens (at most a tenth) whatever
    ``val_fraction`` says (0: exactly ``val_fraction``). ``shard_tokens``: tokens per shard file.
    ``progress``: show a progress bar on stderr; ``summary``: print one summary line (default: ``progress``).
    """
    checked(config)
    if shard_tokens < 1:
        raise UserError(f"shard_tokens must be at least 1, got {shard_tokens}")
    output = Path(os.path.abspath(config.output))  # normalises "." and "..", whose names the staging dir needs
    corpus = open_corpus(
        config.inputs, config.text_field, config.skip_bad_lines, (config.split, config.config_name, config.streaming)
    )
    _check_output(output, config.overwrite)
    staging = fresh_staging_dir(output)
    try:
        meta = _prepare_in(staging, corpus, config, min_val_tokens, shard_tokens, progress)
        meta.update(sources=corpus.sources, text_field=config.text_field, val_fraction=config.val_fraction)
        if config.skip_bad_lines:
            meta["skipped_lines"] = len(corpus.skipped)  # of the last pass over the corpus: the tokenized one
            if corpus.skipped:
                shown = "; ".join(corpus.skipped[:3]) + ("; ..." if len(corpus.skipped) > 3 else "")
                warn(f"skipped {len(corpus.skipped):,} bad lines ({shown})")
        write_meta(staging, meta)
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if progress if summary is None else summary:
        print(_summary(output, meta))
    return output


def prepared_builtin(cache_dir: str | Path | None = None, vocab_size: int = 8192, progress: bool = True) -> Path:
    """The built-in corpus prepared with a ``vocab_size`` BPE trained on it, made once and then reused.

    The directory is ``cache_dir`` (default ``$MEAP_CACHE``, else ``~/.cache/meap``) /
    ``builtin-v{BUILTIN_VERSION}-bpe{vocab_size}``; a later call only checks its ``meta.json``.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    output = root / f"builtin-v{BUILTIN_VERSION}-bpe{vocab_size}"
    if not (output / META_FILE).is_file():
        try:
            prepare_corpus(
                PrepareConfig(inputs=["builtin"], output=str(output), train_tokenizer=vocab_size), progress=progress
            )
        except UserError:
            if not (output / META_FILE).is_file():  # not merely a concurrent run that finished first
                raise
    load_meta(output)
    return output


def _prepare_in(staging, corpus, config: PrepareConfig, min_val_tokens, shard_tokens, progress) -> dict:
    """Steps 1-3 inside ``staging``; returns the ``meta.json`` entries that describe the tokens."""
    from meap.tokens import mask_token_id, special_token_ids

    tokenizer, tokenizer_source = _make_tokenizer(
        config.tokenizer, config.train_tokenizer, not config.merge_digits, corpus, progress
    )
    tokenizer.save_pretrained(staging / TOKENIZER_DIR)
    tokenizer_file = staging / TOKENIZER_DIR / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise UserError(f"{tokenizer_source}: the tokenizer saves no tokenizer.json; expected a fast tokenizer")
    eos, dtype = tokenizer.eos_token_id, token_dtype(len(tokenizer))

    stream = staging / _STREAM_FILE
    encoder = _Encoder(tokenizer_file, eos, dtype)
    num_documents = _tokenize(corpus, encoder, stream, config.num_proc or min(os.cpu_count() or 1, 8), progress)
    tokens = np.memmap(stream, dtype=dtype, mode="r")
    val_fraction = _val_fraction_used(len(tokens), config.val_fraction, min_val_tokens)
    wanted = min(min_val_tokens, len(tokens) * MAX_SMALL_VAL_SHARE)
    rule = _val_rule(num_documents, len(tokens), val_fraction, wanted, partial(_document_lengths, tokens, eos))
    splits = _split(tokens, rule, staging, dtype, shard_tokens, eos)
    del tokens  # close the memmap before deleting its file
    stream.unlink()
    return {
        "format": FORMAT,
        "version": VERSION,
        "dtype": dtype.name,
        "vocab_size": len(tokenizer),
        "eos_token_id": eos,
        "mask_token_id": mask_token_id(tokenizer),
        "special_token_ids": special_token_ids(tokenizer),
        "tokenizer": TOKENIZER_DIR,
        "tokenizer_source": tokenizer_source,
        "splits": splits,
        "val_rule": rule.name,
        "val_fraction_used": val_fraction,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _make_tokenizer(spec: str | None, train_tokenizer: int | None, split_digits: bool, corpus: Corpus, progress: bool):
    """(the tokenizer, how meta.json describes where it came from)."""
    # Imported here: transformers is slow to import, and spawned workers never need it.
    from meap.data.tokenizer import PACKAGED_TOKENIZERS, load_tokenizer, train_bpe

    if train_tokenizer is not None:
        # The trainer's own bars leave blank lines on stdout when it is not a terminal.
        show_progress = progress and sys.stdout.isatty()
        tokenizer = train_bpe(
            corpus.documents(), train_tokenizer, split_digits=split_digits, show_progress=show_progress
        )
        digits = "one token per digit" if split_digits else "digits merged"
        size = len(tokenizer)
        if size < train_tokenizer:
            warn(
                f"--train-tokenizer {train_tokenizer}: the corpus has too few distinct pairs seen twice; the "
                f"BPE has {size} tokens"
            )
        asked = f", {train_tokenizer} asked for" if size < train_tokenizer else ""
        return tokenizer, f"byte-level BPE of {size} tokens{asked}, trained on the inputs ({digits})"
    spec = spec or DEFAULT_TOKENIZER
    return load_tokenizer(spec), spec if spec in PACKAGED_TOKENIZERS else os.path.abspath(spec)


# --- tokenize -------------------------------------------------------------------------------------------


class _Batch(NamedTuple):
    documents: list[str]
    num_bytes: int


class _Encoder:
    """Encodes a batch of documents into one id array: each document's ids, then EOS."""

    def __init__(self, tokenizer_file: Path, eos_token_id: int, dtype: np.dtype):
        self.tokenizer_file, self.eos_token_id, self.dtype = tokenizer_file, eos_token_id, dtype
        self._tokenizer: Tokenizer | None = None  # loaded on first use, in whichever process uses it

    def __call__(self, documents: list[str]) -> np.ndarray:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
            self._tokenizer.encode_special_tokens = True  # "<|endoftext|>" written in a document stays text
        encodings = self._tokenizer.encode_batch_fast(documents, add_special_tokens=False)
        ids = [token for encoding in encodings for token in (*encoding.ids, self.eos_token_id)]
        return np.array(ids, dtype=self.dtype)


_worker_encoder: _Encoder | None = None  # one per worker process, set by _start_worker


def _start_worker(encoder: _Encoder) -> None:
    global _worker_encoder
    # Each worker tokenizes one batch on one core; the Rust thread pool would oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_encoder = encoder


def _encode_in_worker(documents: list[str]) -> np.ndarray:
    return _worker_encoder(documents)


def _tokenize(corpus: Corpus, encoder: _Encoder, stream: Path, num_proc: int, progress: bool) -> int:
    """Append every document's ids and EOS to ``stream``; returns the number of documents."""
    num_documents = num_tokens = 0
    bar = tqdm(
        total=corpus.estimated_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="tokenizing",
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar, open(stream, "wb") as file:
        for ids, batch in _encode_in_order(_batches(corpus.documents()), encoder, num_proc):
            ids.tofile(file)
            num_documents += len(batch.documents)
            num_tokens += len(ids)
            bar.total = max(bar.total, bar.n + batch.num_bytes)  # the size is an estimate
            bar.update(batch.num_bytes)
            bar.set_postfix_str(f"{num_documents:,} docs, {num_tokens:,} tokens", refresh=False)
        bar.total = bar.n
    return num_documents


def _batches(documents: Iterable[str]) -> Iterator[_Batch]:
    batch: list[str] = []
    num_bytes = 0
    for document in documents:
        batch.append(document)
        num_bytes += len(document.encode("utf-8"))
        if len(batch) >= BATCH_DOCUMENTS or num_bytes >= BATCH_BYTES:
            yield _Batch(batch, num_bytes)
            batch, num_bytes = [], 0
    if batch:
        yield _Batch(batch, num_bytes)


def _encode_in_order(
    batches: Iterator[_Batch], encoder: _Encoder, num_proc: int
) -> Iterator[tuple[np.ndarray, _Batch]]:
    """(ids, batch) for every batch, in input order."""
    if num_proc == 1:
        for batch in batches:
            yield encoder(batch.documents), batch
        return
    # spawn, not fork: the parent may already run tokenizers' thread pool (after training a BPE), and forking
    # a process with live threads can deadlock. An executor, not multiprocessing.Pool: a worker that dies
    # raises BrokenProcessPool instead of hanging the run.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_start_worker, initargs=(encoder,)) as pool:
        # A bounded window of submitted batches (not Pool.imap, whose feeder thread reads the whole corpus
        # ahead of the workers), collected in submission order.
        in_flight: deque = deque()
        for batch in batches:
            in_flight.append((pool.submit(_encode_in_worker, batch.documents), batch))
            yield from _collect(in_flight, keep=2 * num_proc)
        yield from _collect(in_flight, keep=0)


def _collect(in_flight: deque, keep: int) -> Iterator[tuple[np.ndarray, _Batch]]:
    while len(in_flight) > keep:
        future, batch = in_flight.popleft()
        yield future.result(), batch


# --- split ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EveryNthDocument:
    """Whole documents: document i goes to val iff ⌊(i+1)·f⌋ > ⌊i·f⌋."""

    fraction: float
    name: str = "documents"

    def is_val(self, positions: np.ndarray, documents: np.ndarray) -> np.ndarray:
        return np.floor((documents + 1) * self.fraction) > np.floor(documents * self.fraction)


@dataclass(frozen=True)
class _EvenPieces:
    """Token pieces ``[starts[p], ends[p])`` of the stream."""

    starts: np.ndarray
    ends: np.ndarray
    name: str = "pieces"

    def is_val(self, positions: np.ndarray, documents: np.ndarray) -> np.ndarray:
        piece = np.searchsorted(self.ends, positions, side="right")  # the first piece ending after each position
        inside = piece < len(self.ends)
        return inside & (positions >= self.starts[np.minimum(piece, len(self.ends) - 1)])


def _val_fraction_used(num_tokens: int, fraction: float, min_val_tokens: int) -> float:
    """``fraction``, raised on a small corpus to hold out about min(min_val_tokens, a tenth) of its tokens."""
    wanted = min(min_val_tokens, num_tokens * MAX_SMALL_VAL_SHARE)
    return max(fraction, wanted / num_tokens) if num_tokens else fraction


def _document_lengths(tokens: np.ndarray, eos: int) -> np.ndarray:
    """Tokens of each document of the stream, its EOS included (every document ends with one)."""
    ends = [
        np.flatnonzero(tokens[s : s + SPLIT_BLOCK_TOKENS] == eos) + s for s in range(0, len(tokens), SPLIT_BLOCK_TOKENS)
    ]
    return np.diff(np.concatenate(([-1], *ends)))


def _val_rule(
    num_documents: int, num_tokens: int, fraction: float, wanted: float = 0, document_lengths=None
) -> _EveryNthDocument | _EvenPieces:
    """Whole documents where ``fraction`` of them holds about ``wanted`` tokens (90%), else even pieces (a few
    long documents: one of them may hold far less than a small corpus's promised validation split).
    ``document_lengths()`` reads the documents' lengths, a pass over the stream made only when that decides."""
    if np.floor(num_documents * fraction) >= 1:
        rule = _EveryNthDocument(fraction)
        if not wanted or document_lengths()[rule.is_val(None, np.arange(num_documents))].sum() >= 0.9 * wanted:
            return rule
    val_tokens = max(1, round(num_tokens * fraction))
    num_pieces = max(1, val_tokens // VAL_PIECE_TOKENS)
    pieces = np.arange(num_pieces)
    ends = num_tokens * (pieces + 1) // num_pieces
    sizes = val_tokens // num_pieces + (pieces < val_tokens % num_pieces)
    return _EvenPieces(starts=ends - sizes, ends=ends)


def _split(tokens: np.ndarray, rule, directory: Path, dtype: np.dtype, shard_tokens: int, eos: int) -> dict:
    """Route ``tokens`` into train and val shards by ``rule``; returns the ``splits`` entry of ``meta.json``."""
    writers = {split: ShardWriter(directory, split, dtype, shard_tokens, eos) for split in ("train", "val")}
    documents_before = 0
    for start in range(0, len(tokens), SPLIT_BLOCK_TOKENS):
        block = np.asarray(tokens[start : start + SPLIT_BLOCK_TOKENS])
        is_eos = block == eos
        documents = documents_before + np.cumsum(is_eos) - is_eos  # the document each token belongs to
        documents_before += int(is_eos.sum())
        is_val = rule.is_val(np.arange(start, start + len(block)), documents)
        cuts = [0, *(np.flatnonzero(np.diff(is_val)) + 1), len(block)]
        for begin, end in zip(cuts, cuts[1:]):
            writers["val" if is_val[begin] else "train"].write(block[begin:end])
    return {split: writer.close() for split, writer in writers.items()}


# --- options, staging and publishing -----------------------------------------------------------------


def _check_output(output: Path, overwrite: bool) -> None:
    if (output / META_FILE).is_file():
        if not overwrite:
            raise UserError(f"{output}: already a prepared data directory; pass --overwrite to replace it")
    elif output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"{output}: exists and is not a prepared data directory; refusing to replace it")


def _publish(staging: Path, output: Path) -> None:
    """Rename ``staging`` to ``output``, moving an old prepared directory (overwrite was allowed) aside first."""
    try:
        publish_dir(staging, output)  # over an old prepared directory (overwrite was allowed) or an empty one
    except OSError as error:
        raise UserError(f"{output}: cannot move the prepared data into place ({error})") from None


def _summary(output: Path, meta: dict) -> str:
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    return (
        f"prepared {output}: {train['num_documents'] + val['num_documents']:,} documents, "
        f"{train['num_tokens'] + val['num_tokens']:,} tokens (train {train['num_tokens']:,}, "
        f"val {val['num_tokens']:,} by {meta['val_rule']}{_raised(meta)}), {meta['dtype']}, "
        f"{len(train['shards']) + len(val['shards'])} shards"
        + (f", {meta['skipped_lines']:,} bad lines skipped" if meta.get("skipped_lines") else "")
    )


def _raised(meta: dict) -> str:
    used, asked = meta["val_fraction_used"], meta["val_fraction"]
    return f", {used:.1%} held out instead of {asked:.1%}: a small corpus" if used > asked else ""
