"""Pretraining data: from local documents to packed token shards that training memory-maps.

The stages, each a plain deterministic function:

1. **source** (:mod:`meap.data.sources`, :mod:`meap.data.builtin`): one ordered stream of documents (str)
   from text files, JSONL/JSON, Parquet, a saved ``datasets`` dataset, or the built-in public-domain corpus.
2. **tokenize** (:mod:`meap.data.tokenizer`): the packaged GPT-2 BPE, a local Hugging Face tokenizer, or a
   byte-level BPE trained on the corpus; every one carries an EOS token and ``[MASK]``.
3. **pack into shards** (:mod:`meap.data.prepare` writes, :mod:`meap.data.shards` reads): documents
   concatenated, each followed by EOS, split deterministically into train and val, stored as raw
   little-endian ``uint16``/``uint32`` files beside ``meta.json`` and the saved tokenizer.
4. **dataset / collator** (later, in training): fixed-length windows over the memory-mapped shards; masks
   are drawn per batch there and never cached here.

Importing this package imports nothing heavy; import the submodules you need.
"""
