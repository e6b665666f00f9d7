"""MEAP-SFT, the fine-tuning half: instruction files → conversations (:mod:`~meap.sft.formats`) → token
segments (:mod:`~meap.sft.template`) → a seeded stream (:mod:`~meap.sft.stream`) → rows with a masked copy
(:mod:`~meap.sft.rows`), drawn per batch by the collator (:mod:`~meap.sft.collator`).
``meap sft`` plans a run from these in :mod:`meap.train.build_sft`.
"""
