"""The corpus split rule, once: which of train / val / test a sequence lands in, from the sequence alone.

A cleaned sequence's key is a 64-bit blake2b hash (`sequence_key`; it is also the deduplication key). Its split is
a pure function of the key and the seed (`split_of`): u = splitmix64(key ^ seed) / 2**64, test if u <
test_fraction, val if u < test + val fractions, else train. So a sequence lands in the same split whatever the
input order, partitioning or thread count, and duplicates can never straddle splits. `helm prepare` splits with it
(helm/prepare.py) and `helm annotate` finds a corpus's training rows with it (helm/downstream/annotate.py).
"""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")  # a prepared corpus's parts, in `split_of`'s numbering (0, 1, 2)
_MASK64 = (1 << 64) - 1


def sequence_key(seq: str) -> int:
    """64-bit dedup key of a cleaned sequence."""
    return int.from_bytes(hashlib.blake2b(seq.encode("ascii"), digest_size=8).digest(), "little")


def split_of(keys: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """0 = train, 1 = val, 2 = test, from the keys alone (splitmix64 finaliser, vectorized)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 & _MASK64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.where(u < test_fraction, 2, np.where(u < test_fraction + val_fraction, 1, 0)).astype(np.int8)
