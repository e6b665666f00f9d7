"""Summarisation data for the hallucination evaluation: documents with reference summaries, and summaries made
elsewhere. JSONL (gzipped or not, recognised by its bytes) or a saved ``datasets`` dataset; the fields are
XSum's, MultiNews', CNN/DailyMail's or WikiSum's, or those given."""

from __future__ import annotations

from pathlib import Path

from meap.errors import UserError

# (document, reference summary) field names: XSum and MultiNews, CNN/DailyMail, WikiSum
FIELD_PAIRS = (("document", "summary"), ("article", "highlights"), ("article", "summary"))


def _fields(keys: list[str], document_field: str | None, summary_field: str | None, where: str) -> tuple[str, str]:
    for document, summary in FIELD_PAIRS:
        chosen = (document_field or document, summary_field or summary)
        if set(chosen) <= set(keys):
            return chosen
    given = [f for f in (document_field, summary_field) if f]
    raise UserError(
        f"{where}: "
        + (f"no field {', '.join(f'`{f}`' for f in given if f not in keys)}" if given else "no known field pair")
        + f" (its keys: {', '.join(keys)}); expected "
        + " or ".join(f"{d}/{s}" for d, s in FIELD_PAIRS)
        + ", or name them with --document-field and --summary-field"
    )


def _records(path: Path):
    """(where, record) of a JSONL file or a saved dataset (its ``test`` split, or its one split)."""
    if path.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise UserError(f"{path}: not a saved `datasets` dataset ({error})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if "test" not in loaded and len(loaded) != 1:
                raise UserError(
                    f"{path}: a dataset of splits {', '.join(loaded)}; expected a `test` split or one split"
                )
            loaded = loaded["test"] if "test" in loaded else next(iter(loaded.values()))
        for index, record in enumerate(loaded):
            yield f"{path}[{index}]", record
        return
    from meap.data.sources import json_lines

    yield from json_lines(path, "a JSON object with a document and its reference summary")


def read_documents(
    path: str | Path, document_field: str | None = None, summary_field: str | None = None, limit: int | None = None
) -> list[dict]:
    """``[{id, document, reference}]``, checked: every document and reference a non-empty string (else a
    :class:`UserError` naming the file and line, or record, and the key). Ids are the records' ``id``, else
    their index."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or dataset directory")
    examples, fields = [], None
    for where, record in _records(path):
        fields = fields or _fields(list(record), document_field, summary_field, where)
        for key in fields:
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise UserError(f"{where}: `{key}` is missing or not a non-empty string")
        identifier = record.get("id")
        examples.append(
            {
                "id": str(identifier) if identifier is not None else str(len(examples)),
                "document": record[fields[0]],
                "reference": record[fields[1]],
            }
        )
        if limit is not None and len(examples) == limit:
            break
    if not examples:
        raise UserError(f"{path}: no documents (it is empty)")
    return examples


def read_summaries(path: str | Path) -> dict[str, str]:
    """id -> summary of a JSONL file of ``id``, ``summary`` records (summaries made elsewhere)."""
    from meap.data.sources import json_lines

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    made = {}
    for where, record in json_lines(path, "a JSON object with `id` and `summary`"):
        if record.get("id") is None or not isinstance(record.get("summary"), str):
            raise UserError(f"{where}: expected `id` and a string `summary`")
        made[str(record["id"])] = record["summary"]
    return made
