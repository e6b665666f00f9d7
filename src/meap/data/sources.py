"""Document sources: the local inputs meap reads, as one ordered stream of documents (str).

An input is a path or a glob pattern (``**`` recurses):

* a text file (``.txt``, ``.md`` or any extension not listed below): the whole file is one document;
* ``.jsonl`` / ``.jsonl.gz``: one JSON object per line, the document under ``text_field``;
* ``.json``: a list of objects, or one object per line;
* ``.parquet``: the string column ``text_field``, read in row batches;
* a directory written by ``datasets``' ``save_to_disk``: its column ``text_field``; of a ``DatasetDict``,
  the "train" split, or the only one;
* any other directory: the files of the formats above inside it (text files only as ``.txt``, ``.text``,
  ``.md``, ``.markdown``, ``.rst``), recursively, in sorted order; hidden entries are skipped;
* ``hf:NAME``: a dataset as ``datasets.load_dataset(NAME)`` reads it (a hub id, from the cache offline, or a
  local directory laid out as a hub dataset repository), one split, optionally streamed
  (:func:`hub_dataset_documents`).

The order is deterministic: inputs as given, glob matches and directory entries sorted by name. Documents
that are empty or only whitespace are skipped. Every problem with an input raises :class:`UserError` with one
line that names the file (``file:LINE`` for text and JSON Lines, ``row N`` / ``item N`` counted from 0 for
tables) and what was expected.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from meap.data.builtin import builtin_documents, builtin_source_files
from meap.errors import UserError, error_summary

TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst")
PARQUET_BATCH_ROWS = 1024
_DATASET_MARKERS = ("dataset_info.json", "dataset_dict.json")


def iter_documents(
    inputs: Sequence[str | Path], text_field: str = "text", skipped: list[str] | None = None
) -> Iterator[str]:
    """Every non-empty document of ``inputs``, in order; :class:`UserError` if there is none at all.

    ``skipped``: a bad JSON Lines line (not UTF-8, not JSON, not an object, no string ``text_field``) is
    appended to it as ``"file:LINE: what is wrong"`` and passed over, instead of stopping the read.
    """
    found_any = False
    for source in resolve_inputs(inputs):
        for document in read_documents(source, text_field, skipped):
            if document.strip():
                found_any = True
                yield document
    if not found_any:
        raise UserError(
            f"no non-empty document in {', '.join(map(str, inputs))}: expected text, or records with a "
            f"non-empty {text_field!r} field"
        )


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The files and saved datasets that ``inputs`` name, in reading order (globs and directories expanded)."""
    if not inputs:
        raise UserError("no inputs given: expected files, directories or glob patterns")
    sources: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.exists():
            sources.extend(_expand(path))
        elif glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                raise UserError(f"{item}: no file matches this glob pattern")
            for match in matches:
                sources.extend(_expand(Path(match)))
        else:
            raise UserError(f"{item}: no such file or directory")
    return sources


def read_documents(source: Path, text_field: str = "text", skipped: list[str] | None = None) -> Iterator[str]:
    """The documents of one resolved source (a file or a saved dataset), empty ones included."""
    kind = _format(source)
    if kind == "jsonl":
        yield from _read_jsonl(source, text_field, skipped=skipped)
    elif kind == "json":
        yield from _read_json(source, text_field, skipped)
    elif kind == "dataset":
        yield from _read_dataset(source, text_field)
    elif kind == "parquet":
        yield from _read_parquet(source, text_field)
    else:
        yield _read_text(source)


def estimate_text_bytes(sources: Sequence[Path]) -> int:
    """Roughly how many bytes of text ``sources`` hold (for a progress bar): file sizes, Parquet uncompressed."""
    total = 0
    for source in sources:
        if source.is_dir():
            total += sum(file.stat().st_size for file in source.rglob("*.arrow"))
        elif _format(source) == "parquet":
            total += _parquet_uncompressed_bytes(source)
        else:
            total += source.stat().st_size
    return total


def _format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dataset"
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def _is_saved_dataset(directory: Path) -> bool:
    return any((directory / marker).is_file() for marker in _DATASET_MARKERS)


def _expand(path: Path) -> list[Path]:
    if not path.is_dir() or _is_saved_dataset(path):
        return [path]
    found = _walk(path)
    if not found:
        raise UserError(
            f"{path}: no readable files inside; expected {', '.join(TEXT_SUFFIXES)}, .jsonl, .json or .parquet "
            "files, or a dataset saved with save_to_disk"
        )
    return found


def _walk(directory: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend([entry] if _is_saved_dataset(entry) else _walk(entry))
        elif _format(entry) != "text" or entry.suffix.lower() in TEXT_SUFFIXES:
            found.append(entry)
    return found


def _read_text(path: Path) -> str:
    return _decode(path.read_bytes(), path).replace("\r\n", "\n")


def _decode(data: bytes, path: Path, line: int = 1, offset: int = 0) -> str:
    """``data`` as UTF-8; it starts at ``line`` and byte ``offset`` of ``path`` (for the error message)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line += data.count(b"\n", 0, error.start)
        raise UserError(
            f"{path}:{line}: not valid UTF-8 (byte offset {offset + error.start}); re-encode the file as UTF-8"
        ) from None


def _read_jsonl(
    path: Path, text_field: str, expected: str = "a JSON object per line", skipped: list[str] | None = None
) -> Iterator[str]:
    for where, record in json_lines(path, expected, skipped):
        try:
            yield _text_of(record, text_field, where)
        except UserError as error:
            if skipped is None:
                raise
            skipped.append(str(error))


def json_lines(
    path: Path, expected: str = "a JSON object per line", skipped: list[str] | None = None
) -> Iterator[tuple[str, dict]]:
    """``("file:LINE", object)`` for every non-blank line of a JSONL file, gzipped or not.

    A line that is not UTF-8, not JSON or not a JSON object raises :class:`UserError` naming ``file:LINE``
    and ``expected``, or, given a ``skipped`` list, is recorded there and passed over.
    """
    offset = 0
    for line_number, raw in enumerate(_binary_lines(path), start=1):
        start, offset = offset, offset + len(raw)
        try:
            record = _json_line(raw, f"{path}:{line_number}", path, line_number, start, expected)
        except UserError as error:
            if skipped is None:
                raise
            skipped.append(str(error))
            continue
        if record is not None:
            yield f"{path}:{line_number}", record


def _json_line(raw: bytes, where: str, path: Path, line_number: int, offset: int, expected: str) -> dict | None:
    """The object on one JSONL line, None for a blank line."""
    line = _decode(raw, path, line_number, offset)
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        # json's own message ends "... at" before its line and column; the line is in `where`
        raise UserError(
            f"{where}: malformed JSON ({error.msg.removesuffix(' at')}, at column {error.colno}); expected {expected}"
        ) from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: found a JSON {_json_type(record)}; expected {expected}")
    return record


def _binary_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"  # by content, whatever the suffix
    with (gzip.open if gzipped else open)(path, "rb") as file:
        while True:
            try:
                line = file.readline()
            except (OSError, EOFError, zlib.error) as error:  # a corrupt or truncated .gz
                raise UserError(f"{path}: cannot read ({error})") from None
            if not line:
                return
            yield line


def _read_json(path: Path, text_field: str, skipped: list[str] | None = None) -> Iterator[str]:
    expected = "a JSON list of objects, or one JSON object per line"
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError:  # not one JSON value: read it as JSON Lines, which reports the bad line
        yield from _read_jsonl(path, text_field, expected, skipped)
        return
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise UserError(f"{path}: found a JSON {_json_type(data)}; expected {expected}")
    for index, record in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: found a JSON {_json_type(record)}; expected a JSON object")
        yield _text_of(record, text_field, where)


def _text_of(record: dict, text_field: str, where: str) -> str:
    if text_field not in record:
        keys = ", ".join(sorted(map(str, record))[:10]) or "none"
        raise UserError(
            f"{where}: no key {text_field!r} (keys: {keys}); pass --text-field with the key that holds the text"
        )
    value = record[text_field]
    if not isinstance(value, str):
        raise UserError(f"{where}: key {text_field!r} holds a JSON {_json_type(value)}; expected a string")
    return value


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable Parquet file ({error})") from None
    _check_string_column(parquet.schema_arrow, text_field, str(path))
    first_row = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        yield from _column_strings(batch.column(0).to_pylist(), text_field, str(path), first_row)
        first_row += batch.num_rows


def _parquet_uncompressed_bytes(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return path.stat().st_size  # reading it reports the problem
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


def _read_dataset(directory: Path, text_field: str) -> Iterator[str]:
    dataset = _load_dataset(directory)
    _check_string_column(dataset.data.schema, text_field, str(directory))
    first_row = 0
    for table in dataset.select_columns([text_field]).with_format("arrow").iter(batch_size=PARQUET_BATCH_ROWS):
        yield from _column_strings(table.column(0).to_pylist(), text_field, str(directory), first_row)
        first_row += table.num_rows


def _load_dataset(directory: Path):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(directory))
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{directory}: cannot load the saved dataset ({error})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if "train" in loaded:
        return loaded["train"]
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    raise UserError(
        f"{directory}: a DatasetDict with splits {', '.join(loaded)} and none named 'train'; "
        "pass the directory of the split to read"
    )


def _check_string_column(schema, text_field: str, where: str) -> None:
    import pyarrow as pa

    if text_field not in schema.names:
        raise UserError(
            f"{where}: no column {text_field!r} (columns: {', '.join(schema.names)}); "
            "pass --text-field with the column that holds the text"
        )
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UserError(f"{where}: column {text_field!r} has type {column_type}; expected a string column")


def _column_strings(values: list, text_field: str, where: str, first_row: int) -> Iterator[str]:
    for offset, value in enumerate(values):
        if value is None:
            raise UserError(f"{where}: row {first_row + offset}: column {text_field!r} is null; expected a string")
        yield value


HUB_DATASET_PREFIX = "hf:"
BUILTIN_INPUT = "builtin"


def hub_dataset_documents(
    spec: str, text_field: str = "text", split: str = "train", config_name: str | None = None, streaming: bool = False
) -> Iterator[str]:
    """The ``text_field`` of every row of split ``split`` of ``hf:NAME`` (``streaming``: read as it downloads,
    for corpora larger than memory or disk)."""
    import datasets

    name = spec.removeprefix(HUB_DATASET_PREFIX)
    try:
        data = datasets.load_dataset(name, name=config_name or None, split=split, streaming=streaming)
    except (ValueError, ConnectionError, FileNotFoundError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise UserError(f"{spec}: cannot load the dataset ({error_summary(error)})") from None
    columns = list(data.features or {}) if data.features is not None else None
    if columns is not None and text_field not in columns:
        raise UserError(
            f"{spec}: split {split!r} has no column {text_field!r} (columns: {', '.join(columns)}); "
            "pass --text-field with the column that holds the text"
        )
    for row_number, row in enumerate(data):
        value = row.get(text_field)
        if not isinstance(value, str):
            raise UserError(
                f"{spec}: row {row_number}: column {text_field!r} holds {_json_type(value)}; expected a string"
            )
        yield value


@dataclass(frozen=True)
class Corpus:
    """The inputs of one preparation, readable as many times as the preparation needs (a tokenizer trained
    on them reads them twice)."""

    documents: Callable[[], Iterator[str]]  # starts a fresh pass over the documents
    estimated_bytes: int
    sources: list[str]
    skipped: list[str] = field(default_factory=list)  # bad lines passed over in the latest pass


def open_corpus(
    inputs: Sequence[str] | str,
    text_field: str,
    skip_bad_lines: bool = False,
    dataset: tuple[str, str | None, bool] = ("train", None, False),
) -> Corpus:
    inputs = [inputs] if isinstance(inputs, (str, Path)) else [str(item) for item in inputs]
    hub = [item for item in inputs if item.startswith(HUB_DATASET_PREFIX)]
    if hub:
        if len(inputs) > 1:
            raise UserError(f"{hub[0]}: a dataset input stands alone (prepare other inputs into another directory)")
        split, config_name, streaming = dataset
        return Corpus(
            partial(hub_dataset_documents, hub[0], text_field, split, config_name, streaming),
            0,
            [f"{hub[0]} (split {split}" + (f", config {config_name})" if config_name else ")")],
        )
    if BUILTIN_INPUT in inputs:
        if inputs != [BUILTIN_INPUT]:
            raise UserError(f"{BUILTIN_INPUT!r} is the whole built-in corpus and cannot be combined with other inputs")
        shakespeare, bible = builtin_source_files()
        size = sum(path.stat().st_size for path in [*shakespeare, bible])
        return Corpus(builtin_documents, size, [BUILTIN_INPUT])
    sources = resolve_inputs(inputs)
    skipped: list[str] = []

    def documents() -> Iterator[str]:
        skipped.clear()
        return iter_documents(inputs, text_field, skipped if skip_bad_lines else None)

    return Corpus(documents, estimate_text_bytes(sources), [os.path.abspath(item) for item in inputs], skipped)
