"""Packed token shards: the on-disk layout of a prepared data directory, its writer and its readers.

A prepared directory holds::

    meta.json        the layout below, plus how the directory was made (see meap.data.prepare)
    tokenizer/       the tokenizer, saved with save_pretrained, [MASK] included
    train-00000.bin  raw little-endian token ids (np.memmap-readable), no header
    val-00000.bin

``meta.json`` has ``format`` ("meap-shards"), ``version`` (1), ``dtype`` ("uint16" when every id fits, i.e.
``vocab_size <= 65536``, else "uint32"), ``vocab_size`` (``len(tokenizer)``, ``[MASK]`` included),
``eos_token_id``, ``mask_token_id``, ``special_token_ids``, ``tokenizer`` (the subdirectory), and ``splits``:
``{name: {"shards": [{"file", "num_tokens"}, ...], "num_tokens", "num_documents"}}``.

Each split is one token stream cut into shards of at most ``shard_tokens`` ids: documents follow each other,
each followed by one EOS, and a document may continue in the next shard, so readers treat a split's shards
as one sequence. ``num_documents`` counts the EOS tokens in the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from meap.errors import UserError

FORMAT = "meap-shards"
VERSION = 1
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
UINT16_MAX_VOCAB = 2**16
_REQUIRED_KEYS = {
    "format": str,
    "version": int,
    "dtype": str,
    "vocab_size": int,
    "eos_token_id": int,
    "mask_token_id": int,
    "special_token_ids": list,
    "tokenizer": str,
    "splits": dict,
}


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian ``uint16`` when every id of a ``vocab_size`` vocabulary fits, else ``uint32``."""
    return np.dtype("<u2" if vocab_size <= UINT16_MAX_VOCAB else "<u4")


class ShardWriter:
    """Appends token ids to ``{split}-00000.bin``, ``{split}-00001.bin``, ... of at most ``shard_tokens`` ids."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int, eos_token_id: int):
        self.directory, self.split, self.dtype = Path(directory), split, np.dtype(dtype)
        self.shard_tokens, self.eos_token_id = shard_tokens, eos_token_id
        self.shards: list[dict] = []
        self.num_documents = 0
        self._file = None

    def write(self, tokens: np.ndarray) -> None:
        self.num_documents += int(np.count_nonzero(tokens == self.eos_token_id))
        while len(tokens):
            if self._file is None:
                self._open_next_shard()
            shard = self.shards[-1]
            chunk = tokens[: self.shard_tokens - shard["num_tokens"]]
            chunk.astype(self.dtype, copy=False).tofile(self._file)
            shard["num_tokens"] += len(chunk)
            tokens = tokens[len(chunk) :]
            if shard["num_tokens"] == self.shard_tokens:
                self._close_shard()

    def close(self) -> dict:
        """Finish the last shard; returns this split's ``meta.json`` entry."""
        self._close_shard()
        return {
            "shards": self.shards,
            "num_tokens": sum(shard["num_tokens"] for shard in self.shards),
            "num_documents": self.num_documents,
        }

    def _open_next_shard(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._file = open(self.directory / name, "wb")
        self.shards.append({"file": name, "num_tokens": 0})

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_meta(directory: Path, meta: dict) -> None:
    (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_meta(data_dir: str | Path) -> dict:
    """The validated ``meta.json`` of a prepared directory; :class:`UserError` naming the problem otherwise."""
    data_dir = Path(data_dir)
    path = data_dir / META_FILE
    if data_dir.is_file():
        raise UserError(
            f"{data_dir}: a file, not a prepared data directory; prepare it first "
            f"(`meap prepare {data_dir} -o data/{data_dir.stem}`, then --data data/{data_dir.stem})"
        )
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such data directory; create one with `meap prepare`")
    if not path.is_file():
        raise UserError(f"{data_dir}: not a prepared data directory (no {META_FILE}); create one with `meap prepare`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: malformed JSON ({error}); expected the metadata written by `meap prepare`") from None
    _validate_meta(meta, path)
    return meta


def open_split(data_dir: str | Path, split: str) -> list[np.memmap]:
    """One read-only memmap per shard of ``split``, in order."""
    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    if split not in meta["splits"]:
        raise UserError(f"{data_dir}: no split {split!r} (splits: {', '.join(meta['splits'])})")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    shards = meta["splits"][split]["shards"]
    return [_open_shard(data_dir / shard["file"], shard["num_tokens"], dtype) for shard in shards]


def load_prepared_tokenizer(data_dir: str | Path):
    """The tokenizer saved in a prepared directory, checked against ``meta.json``."""
    from meap.data.tokenizer import load_tokenizer  # imports transformers: only when asked for
    from meap.tokens import mask_token_id

    data_dir = Path(data_dir)
    meta = load_meta(data_dir)
    tokenizer = load_tokenizer(data_dir / meta["tokenizer"])
    found = (len(tokenizer), tokenizer.eos_token_id, mask_token_id(tokenizer))
    expected = (meta["vocab_size"], meta["eos_token_id"], meta["mask_token_id"])
    if found != expected:
        raise UserError(
            f"{data_dir / meta['tokenizer']}: (vocab size, eos id, [MASK] id) = {found} but {META_FILE} says "
            f"{expected}; prepare the directory again"
        )
    return tokenizer


def _validate_meta(meta: object, path: Path) -> None:
    expected = "the metadata written by `meap prepare`"
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object ({expected})")
    for key, kind in _REQUIRED_KEYS.items():
        if not isinstance(meta.get(key), kind) or (kind is int and isinstance(meta[key], bool)):
            raise UserError(f"{path}: key {key!r} missing or not a {kind.__name__} ({expected})")
    if (meta["format"], meta["version"]) != (FORMAT, VERSION):
        raise UserError(
            f"{path}: format {meta['format']!r} version {meta['version']}; expected {FORMAT!r} version {VERSION}"
        )
    if meta["dtype"] not in ("uint16", "uint32"):
        raise UserError(f"{path}: key 'dtype' is {meta['dtype']!r}; expected 'uint16' or 'uint32'")
    for name, split in meta["splits"].items():
        shards = split.get("shards") if isinstance(split, dict) else None
        if not isinstance(shards, list) or not all(_is_shard_entry(shard) for shard in shards):
            raise UserError(f'{path}: splits.{name}.shards must be a list of {{"file", "num_tokens"}} objects')


def _is_shard_entry(shard: object) -> bool:
    return (
        isinstance(shard, dict)
        and isinstance(shard.get("file"), str)
        and isinstance(shard.get("num_tokens"), int)
        and shard["num_tokens"] > 0
    )


def _open_shard(path: Path, num_tokens: int, dtype: np.dtype) -> np.memmap:
    if not path.is_file():
        raise UserError(f"{path}: shard listed in {META_FILE} is missing; prepare the directory again")
    size = path.stat().st_size
    if size != num_tokens * dtype.itemsize:
        raise UserError(
            f"{path}: {size} bytes but {META_FILE} says {num_tokens} tokens of {dtype.itemsize} bytes; "
            "prepare the directory again"
        )
    return np.memmap(path, dtype=dtype, mode="r", shape=(num_tokens,))
