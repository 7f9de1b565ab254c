"""A transparency log in the style of Certificate Transparency: Merkle tree hashing and proofs
(:mod:`blackbox.tlog.merkle`), checkpoints as C2SP signed notes (:mod:`blackbox.tlog.note`) and the
store's signed receipts (:mod:`blackbox.tlog.receipt`). See docs/transparency.md.
"""
