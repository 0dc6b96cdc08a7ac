"""Training data: memory-mapped token shards, MLM/CLM framing and masking, a sampler, the DataModule.

``TokenShards(split_dir)`` (``helm.shards``, numpy only) memory-maps a split written by ``helm.prepare``.

Batches (``HelmDataModule`` loaders): ``input_ids`` Long[B, L], ``attention_mask`` Bool[B, L] (True = real
token), ``labels`` Long[B, L] (-100 = no loss), ``position_ids`` Long[B, L] (0..L-1; pads continue the
count, they are masked anyway).

- MLM: ``<cls> t1..tn <eos>``, n <= max_seq_len - 2 (longer sequences are truncated at the end);
  labels only at the selected positions.
- CLM: input ``<cls> t1..tn``, labels ``t1..tn <eos>`` (already aligned), n <= max_seq_len - 1.

Masking strategies (only sequence tokens are ever selected, never ``<cls>``/``<eos>``); the number of
selected positions is ``max(1, round(ratio * n))``:

- ``single``: that many positions drawn uniformly without replacement (BERT).
- ``span``: contiguous spans with geometric lengths (mean 3 tokens, p = 1/3, capped at 10) at uniform
  random starts, until the count is reached (the last span is cut to fit) -- SpanBERT-style.
- ``double``: adjacent token *pairs* (spans of exactly 2), so a codon is hidden together with a neighbour
  and cannot be guessed from it alone; the count is met the same way.

What a selected position is replaced by (``mask_replace``, docs/PROTOCOL.md "Masking"):

- ``mask`` (default, the HELM reference's protocol): every selected position becomes ``<mask>``.
- ``bert``: BERT's 80/10/10 -- ``<mask>`` (80 %), a random sequence token (10 %) or unchanged (10 %).

Validation and test always use ``mask``, whatever the training policy: a reported val/test accuracy never
scores a token that was visible in the input. Masking is a pure function of ``(seed, epoch, sample index)``:
validation and test use epoch 0 always, so their loss is comparable across epochs, and a resumed run masks
exactly like an uninterrupted one.

Sampling: ``EpochSampler`` yields ``(epoch, index)`` pairs. Each epoch is a seeded permutation; rank r of
R takes every R-th element of it, and the tail that would make ranks uneven (< R samples) is dropped for
that epoch, so no sample is seen twice in an epoch across ranks. Validation/test are not shuffled and every
sample is evaluated exactly once across ranks (rank counts may differ by one). The sampler subclasses
``DistributedSampler``, so Lightning keeps it under DDP (no ``use_distributed_sampler=False`` needed).
``StatefulLoader`` counts the samples it has handed out; its ``state_dict()``/``load_state_dict()`` (called by
Lightning on stateful dataloaders at checkpoint/restore) restore the position, so a run resumed mid-epoch
sees exactly the remaining batches of an uninterrupted run (tested with a real ``Trainer``).

Length grouping (``group_by_length``, training only): ``LengthGroupedSampler`` orders the same epoch so that
each run of ``batch_size`` consecutive samples holds sequences of similar length, so a batch pads little
(random batches pad to their longest row). The epoch's seeded permutation is cut into mega-chunks of
``chunk_batches`` global steps, each chunk is sorted by length and cut into batches, and the order of the steps
is shuffled with the same generator: which sequences meet in a chunk, and the order of the batches, stay
random; only the lengths within a batch are alike.
Validation and test keep the plain order (their batches pad as before).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from helm.codons import CLS_ID, EOS_ID, IGNORE_INDEX, MASK_ID, PAD_ID, SPECIALS
from helm.config import MASK_REPLACE, MASKING_STRATEGIES, DataArgs, RunArgs, TrainConfig
from helm.shards import TokenShards
from helm.splits import SPLITS
from helm.tokenizers import load_tokenizer

__all__ = [
    "TokenShards",
    "FramedDataset",
    "EpochSampler",
    "LengthGroupedSampler",
    "StatefulLoader",
    "HelmDataModule",
    "collate",
    "pad_share",
]


# ------------------------------------------------------------------------------------------ framing


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def select_positions(n: int, ratio: float, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions (0..n-1) to predict, per the strategy (see the module docstring)."""
    if strategy not in MASKING_STRATEGIES:
        raise ValueError(f"unknown masking strategy {strategy!r}; choose one of {', '.join(MASKING_STRATEGIES)}")
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    target = min(n, max(1, int(round(ratio * n))))
    if strategy == "single":
        return np.sort(rng.choice(n, size=target, replace=False))
    chosen = np.zeros(n, dtype=bool)
    count = 0
    while count < target:
        length = 2 if strategy == "double" else min(int(rng.geometric(1 / 3)), 10)
        length = min(length, n)
        start = int(rng.integers(0, n - length + 1))
        span = chosen[start : start + length]
        fresh = np.nonzero(~span)[0]
        fresh = fresh[: target - count]  # the last span is cut so the count is met exactly
        span[fresh] = True
        count += len(fresh)
    return np.nonzero(chosen)[0]


def frame_mlm(
    tokens: np.ndarray,
    max_seq_len: int,
    vocab_size: int,
    strategy: str,
    ratio: float,
    rng: np.random.Generator,
    replace: str = "mask",
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) for one sequence: ``<cls> t1..tn <eos>`` with masking applied.

    A sequence longer than the framing allows is cut, and the cut end still gets ``<eos>``: an MLM never
    predicts ``<eos>``, so it is only a boundary marker here (unlike CLM, see ``frame_clm``)."""
    if replace not in MASK_REPLACE:
        raise ValueError(f"unknown mask replacement {replace!r}; choose one of {', '.join(MASK_REPLACE)}")
    body = np.asarray(tokens[: max_seq_len - 2], dtype=np.int64)
    ids = np.concatenate([[CLS_ID], body, [EOS_ID]])
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    pos = select_positions(len(body), ratio, strategy, rng) + 1
    labels[pos] = ids[pos]
    if replace == "mask":
        ids[pos] = MASK_ID
        return ids, labels
    action = rng.random(len(pos))
    ids[pos[action < 0.8]] = MASK_ID
    rand = pos[(action >= 0.8) & (action < 0.9)]
    ids[rand] = rng.integers(len(SPECIALS), vocab_size, size=len(rand))
    return ids, labels


def frame_clm(tokens: np.ndarray, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels): ``<cls> t1..tn`` / ``t1..tn <eos>``.

    A sequence cut at ``max_seq_len`` did not end there: its last label is ignored (-100) instead of ``<eos>``,
    so the model is never taught to stop where the corpus did not."""
    cut = len(tokens) > max_seq_len - 1
    body = np.asarray(tokens[: max_seq_len - 1], dtype=np.int64)
    labels = np.concatenate([body, [IGNORE_INDEX if cut else EOS_ID]])
    return np.concatenate([[CLS_ID], body]), labels


class FramedDataset:
    """Map-style dataset over ``TokenShards``: ``ds[i]`` or ``ds[(epoch, i)]`` -> (input_ids, labels)."""

    def __init__(
        self,
        shards: TokenShards,
        mode: str,
        max_seq_len: int,
        vocab_size: int,
        masking_strategy: str = "single",
        masking_ratio: float = 0.15,
        seed: int = 42,
        num_samples: int = -1,
        fixed_epoch: int | None = None,
        mask_replace: str = "mask",
    ):
        if mode not in ("mlm", "clm"):
            raise ValueError(f"mode must be 'mlm' or 'clm', got {mode!r}")
        if max_seq_len < (3 if mode == "mlm" else 2):
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for a sequence token")
        if masking_strategy not in MASKING_STRATEGIES:
            raise ValueError(f"unknown masking strategy {masking_strategy!r}")
        if mask_replace not in MASK_REPLACE:
            raise ValueError(f"unknown mask replacement {mask_replace!r}; choose one of {', '.join(MASK_REPLACE)}")
        self.mask_replace = mask_replace
        self.shards, self.mode, self.max_seq_len, self.vocab_size = shards, mode, max_seq_len, vocab_size
        self.strategy, self.ratio, self.seed, self.fixed_epoch = masking_strategy, masking_ratio, seed, fixed_epoch
        self.n = len(shards) if num_samples is None or num_samples < 0 else min(num_samples, len(shards))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> tuple[np.ndarray, np.ndarray]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        if self.fixed_epoch is not None:
            epoch = self.fixed_epoch
        if not 0 <= i < self.n:
            raise IndexError(i)
        tokens = self.shards[i]
        if self.mode == "clm":
            return frame_clm(tokens, self.max_seq_len)
        rng = _rng(self.seed, epoch, i)
        return frame_mlm(tokens, self.max_seq_len, self.vocab_size, self.strategy, self.ratio, rng, self.mask_replace)

    def truncated(self) -> int:
        """How many of the used sequences are longer than the framing allows."""
        room = self.max_seq_len - (2 if self.mode == "mlm" else 1)
        return int((self.shards.lengths()[: self.n] > room).sum())

    def lengths(self) -> np.ndarray:
        """Framed length of every used sequence (specials included, cut at ``max_seq_len``): its row width."""
        specials = 2 if self.mode == "mlm" else 1
        return np.minimum(self.shards.lengths()[: self.n] + specials, self.max_seq_len)


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Right-pad a list of (input_ids, labels) into the batch dict (torch tensors)."""
    width = max(len(ids) for ids, _ in items)
    ids = np.full((len(items), width), PAD_ID, dtype=np.int64)
    labels = np.full((len(items), width), IGNORE_INDEX, dtype=np.int64)
    for r, (a, b) in enumerate(items):
        ids[r, : len(a)] = a
        labels[r, : len(b)] = b
    input_ids = torch.from_numpy(ids)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.from_numpy(np.arange(width)[None, :] < np.array([len(a) for a, _ in items])[:, None]),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.arange(width).expand(len(items), width).clone(),
    }


# ------------------------------------------------------------------------------------------ sampling


class EpochSampler(DistributedSampler):
    """Deterministic per-epoch shuffle, split across DDP ranks without overlap; yields ``(epoch, index)``.

    Rank ``r`` of ``R`` gets ``perm[r::R][: n // R]`` (the < R left-over samples are skipped that epoch).
    ``shuffle=False`` gives 0..n-1 in order, every sample once across ranks (validation/test).
    It is a ``DistributedSampler`` so that Lightning leaves it in place under DDP instead of wrapping it."""

    def __init__(self, n: int, seed: int = 42, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0
        self.skip = 0  # samples of this epoch already consumed (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def order(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        per_rank = self.n // self.world_size if self.shuffle else -(-(self.n - self.rank) // self.world_size)
        return perm[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        # the whole epoch, even when resuming: Lightning counts the epoch's batches from len() and its
        # restored progress, and simply stops early when the (shorter) resumed iterator runs out
        return len(self.order())

    def __iter__(self):
        order = self.order()[self.skip :]
        epoch = self.epoch
        self.skip = 0
        return iter([(epoch, int(i)) for i in order])


class LengthGroupedSampler(EpochSampler):
    """``EpochSampler`` whose every ``batch_size`` consecutive samples (one batch) have similar lengths.

    Per epoch, with the ``(seed, epoch)`` generator: permute, keep ``n // R * R`` samples (as ``EpochSampler``),
    cut the samples that fill whole batches on every rank into mega-chunks of ``chunk_batches`` steps (a step =
    one batch per rank), sort each chunk by length and cut it into steps, then shuffle the steps. Rank r takes
    batch r of every step, so the ranks of a step hold neighbouring lengths (no rank waits long on another).
    The < ``batch_size`` samples per rank that do not fill a batch are sorted and form every rank's last,
    partial batch. Same sample count per rank as ``EpochSampler``, so resuming (``skip``) works unchanged."""

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        seed: int = 42,
        rank: int = 0,
        world_size: int = 1,
        chunk_batches: int = 50,
    ):
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError(f"batch_size {batch_size} and chunk_batches {chunk_batches} must be >= 1")
        super().__init__(len(lengths), seed=seed, shuffle=True, rank=rank, world_size=world_size)
        self.lengths = np.asarray(lengths)
        self.batch_size, self.chunk_batches = batch_size, chunk_batches

    def order(self) -> np.ndarray:
        b, world = self.batch_size, self.world_size
        rng = np.random.default_rng([self.seed, self.epoch])
        per_rank = self.n // world
        perm = rng.permutation(self.n)[: per_rank * world]
        full = per_rank // b * b * world  # samples that fill whole batches on every rank
        body, tail = perm[:full], perm[full:]
        # sort within each mega-chunk (lexsort's primary key is its last: chunk, then length); chunks are whole steps
        chunk = np.arange(full) // (self.chunk_batches * b * world)
        body = body[np.lexsort((self.lengths[body], chunk))]
        steps = body.reshape(-1, world, b)[rng.permutation(full // (b * world))]
        tail = tail[np.argsort(self.lengths[tail], kind="stable")].reshape(world, -1)
        return np.concatenate([steps[:, self.rank].reshape(-1), tail[self.rank]])

    def __len__(self) -> int:
        return self.n // self.world_size  # = len(self.order()), without sorting a large corpus to count it


def pad_share(lengths: np.ndarray, batch_size: int, order: np.ndarray | None = None) -> float:
    """Share of pad positions when ``lengths`` (row widths) are batched ``batch_size`` at a time in ``order``
    and each batch is right-padded to its longest row (what ``collate`` does)."""
    rows = np.asarray(lengths if order is None else np.asarray(lengths)[order])
    if len(rows) == 0:
        return 0.0
    starts = np.arange(0, len(rows), batch_size)
    widths = np.maximum.reduceat(rows, starts)
    sizes = np.diff(np.append(starts, len(rows)))
    padded = int((widths * sizes).sum())
    return 1.0 - int(rows.sum()) / padded


class StatefulLoader(DataLoader):
    """DataLoader whose position within the epoch can be saved and restored; Lightning calls
    ``state_dict``/``load_state_dict`` on stateful dataloaders when checkpointing / resuming."""

    def __init__(
        self,
        dataset,
        sampler: EpochSampler,
        batch_size: int,
        num_workers: int = 0,
        pin_memory=False,
        prefetch_factor: int | None = None,
    ):
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,  # torch: only with workers
        )
        self._epoch, self._served = sampler.epoch, 0

    def __iter__(self):
        self._epoch, self._served = self.sampler.epoch, self.sampler.skip
        for batch in super().__iter__():
            self._served += len(batch["input_ids"])
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "samples": self._served}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.epoch = int(state["epoch"])
        self.sampler.skip = int(state["samples"])


# ------------------------------------------------------------------------------------------ DataModule


class HelmDataModule(pl.LightningDataModule):
    """LightningDataModule over a prepared directory (see the module docstring for batches and order).

    ``num_samples`` (-1 = all) keeps the first N sequences of every split (a quick run evaluates quickly too).
    ``mask_replace`` applies to training only; validation/test always mask with ``<mask>``.
    ``position_ids`` is kept for the trainer's bookkeeping: batches always carry ``position_ids`` and the
    trainer passes them to the model only with ``--position_ids``.
    ``group_by_length`` batches training sequences of similar length (``LengthGroupedSampler``); off = the
    plain shuffle of ``EpochSampler``. ``prefetch_factor``: batches each worker loads ahead (torch's default 2).
    Defaults are those of `helm.config.DataArgs`; `from_config` builds one from a run's typed config."""

    def __init__(
        self,
        prepared_dir: str | Path,
        mode: str,
        max_seq_len: int,
        batch_size: int,
        masking_strategy: str = DataArgs.masking_strategy,
        masking_ratio: float = DataArgs.masking_ratio,
        mask_replace: str = DataArgs.mask_replace,
        num_workers: int = 0,
        seed: int = RunArgs.seed,
        num_samples: int = DataArgs.num_samples,
        pin_memory: bool = False,
        position_ids: bool = False,
        eval_batch_size: int | None = None,
        group_by_length: bool = False,
        prefetch_factor: int | None = None,
    ):
        super().__init__()
        self.dir = Path(prepared_dir)
        self.tokenizer = load_tokenizer(self.dir)
        self.vocab = self.tokenizer.vocab
        self.mode, self.max_seq_len, self.batch_size = mode, max_seq_len, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.masking_strategy, self.masking_ratio, self.mask_replace = masking_strategy, masking_ratio, mask_replace
        self.num_workers, self.seed, self.num_samples = num_workers, seed, num_samples
        self.pin_memory, self.position_ids, self.group_by_length = pin_memory, position_ids, group_by_length
        self.prefetch_factor = prefetch_factor
        self.datasets: dict[str, FramedDataset] = {}

    @classmethod
    def from_config(cls, prepared_dir: str | Path, cfg: TrainConfig, num_workers: int) -> HelmDataModule:
        """The data of a training run: its DataArgs, max_seq_len, seed and loader settings."""
        d, r = cfg.data, cfg.run
        return cls(prepared_dir, d.mode, cfg.model.max_seq_len, d.batch_size, d.masking_strategy, d.masking_ratio,
                   d.mask_replace, num_workers, r.seed, d.num_samples, r.pin_mem, d.position_ids,
                   group_by_length=d.group_by_length, prefetch_factor=1 if r.no_prefetcher else None)  # fmt: skip

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def dataset(self, split: str) -> FramedDataset:
        if split not in self.datasets:
            train = split == "train"
            self.datasets[split] = FramedDataset(
                TokenShards(self.dir / split),
                self.mode,
                self.max_seq_len,
                len(self.vocab),
                self.masking_strategy,
                self.masking_ratio,
                seed=self.seed,
                num_samples=self.num_samples,
                fixed_epoch=None if train else 0,
                # evaluation never shows a scored token: a random or kept token would make val/test accuracy
                # partly a copy task (docs/PROTOCOL.md "Masking")
                mask_replace=self.mask_replace if train else "mask",
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            self.dataset(split)

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def _loader(self, split: str) -> StatefulLoader:
        ds = self.dataset(split)
        rank, world = self._rank()
        train = split == "train"
        size = self.batch_size if train else self.eval_batch_size
        if train and self.group_by_length:
            sampler = LengthGroupedSampler(ds.lengths(), size, seed=self.seed, rank=rank, world_size=world)
        else:
            sampler = EpochSampler(len(ds), seed=self.seed, shuffle=train, rank=rank, world_size=world)
        return StatefulLoader(ds, sampler, size, self.num_workers, self.pin_memory, self.prefetch_factor)

    def train_dataloader(self) -> StatefulLoader:
        return self._loader("train")

    def val_dataloader(self) -> StatefulLoader:
        return self._loader("val")

    def test_dataloader(self) -> StatefulLoader:
        return self._loader("test")
