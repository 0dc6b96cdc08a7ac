"""Memory-mapped token shards written by ``helm prepare`` (numpy only, so ``helm.prepare`` stays light)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class TokenShards:
    """A prepared split, memory-mapped: ``len``, ``[i] -> np.ndarray`` of token ids (no specials)."""

    def __init__(self, split_dir: str | Path):
        self.dir = Path(split_dir)
        index_path = self.dir / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path}: no shard index (run `helm prepare` first)")
        self.index = json.loads(index_path.read_text())
        self.dtype = np.dtype(self.index["dtype"])
        self._tokens, self._offsets = [], []
        for shard in self.index["shards"]:
            base = self.dir / shard["name"]
            self._offsets.append(np.memmap(f"{base}.offsets", dtype=self.index.get("offsets_dtype", "<i8"), mode="r"))
            self._tokens.append(np.memmap(f"{base}.tokens", dtype=self.dtype, mode="r") if shard["tokens"] else None)
        counts = [s["sequences"] for s in self.index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"sequence {i} out of range for {len(self)} in {self.dir}")
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return s, i - int(self._starts[s])

    def __getitem__(self, i: int) -> np.ndarray:
        s, j = self._locate(int(i))
        off = self._offsets[s]
        return self._tokens[s][int(off[j]) : int(off[j + 1])]

    def lengths(self) -> np.ndarray:
        """Token count of every sequence (reads the offsets only)."""
        if not self._offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(np.asarray(o)) for o in self._offsets])

    def blocks(self, size: int = 65536):
        """Yield (index of the first sequence, flat tokens, lengths, dedup keys) over blocks of sequences."""
        for s, shard in enumerate(self.index["shards"]):
            offsets = self._offsets[s]
            keys = np.memmap(
                self.dir / f"{shard['name']}.hashes", dtype=self.index.get("hashes_dtype", "<u8"), mode="r"
            )
            for a in range(0, shard["sequences"], size):
                b = min(a + size, shard["sequences"])
                off = np.asarray(offsets[a : b + 1])
                tokens = self._tokens[s][int(off[0]) : int(off[-1])] if self._tokens[s] is not None else off[:0]
                yield int(self._starts[s]) + a, np.asarray(tokens), np.diff(off), np.asarray(keys[a:b])
