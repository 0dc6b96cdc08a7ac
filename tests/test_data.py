"""Shards, framing, masking, sampler and the DataModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helm.codons import CLS_ID, CODONS, EOS_ID, MASK_ID, PAD_ID, SPECIALS, STOP_CODONS
from helm.data import (
    IGNORE_INDEX,
    EpochSampler,
    FramedDataset,
    HelmDataModule,
    LengthGroupedSampler,
    frame_clm,
    frame_mlm,
    pad_share,
    select_positions,
)
from helm.prepare import prepare
from helm.shards import TokenShards
from helm.tokenizers import create_tokenizer

SENSE = [c for c in CODONS if c not in STOP_CODONS]


def random_cds(rng: np.random.Generator, n: int) -> list[str]:
    """Random open reading frames: sense codons only, so prepare rejects none of them (no internal stops)."""
    return ["".join(rng.choice(SENSE, size=int(rng.integers(5, 40)))) for _ in range(n)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    seqs = random_cds(np.random.default_rng(0), 300)
    (root / "seqs.txt").write_text("\n".join(seqs) + "\n")
    prepare([root / "seqs.txt"], root / "out", progress=False, shard_tokens=600, val_fraction=0.2, test_fraction=0.1)
    return root / "out", seqs


def test_token_shards_memmap(prepared):
    out, seqs = prepared
    tok = create_tokenizer("3mer")
    shards = TokenShards(out / "train")
    assert len(shards.index["shards"]) > 3
    assert isinstance(shards._tokens[0], np.memmap)
    stored = [shards[i] for i in range(len(shards))]
    expected = {s: tok.encode(s).tolist() for s in seqs}
    assert all(t.tolist() in expected.values() for t in stored)
    assert shards.lengths().tolist() == [len(t) for t in stored]
    total = sum(len(TokenShards(out / s)) for s in ("train", "val", "test"))
    assert total == len(set(seqs))
    with pytest.raises(IndexError):
        shards[len(shards)]


def run_lengths(pos: np.ndarray) -> list[int]:
    """Lengths of the maximal runs of consecutive positions."""
    breaks = np.nonzero(np.diff(pos) != 1)[0]
    return np.diff(np.concatenate([[-1], breaks, [len(pos) - 1]])).tolist()


@pytest.mark.parametrize("strategy", ["single", "span", "double"])
def test_select_positions_count_and_range(strategy):
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50, 300):
        for ratio in (0.15, 0.5, 1.0):
            pos = select_positions(n, ratio, strategy, rng)
            assert len(pos) == min(n, max(1, round(ratio * n)))
            assert len(set(pos.tolist())) == len(pos) and pos.min() >= 0 and pos.max() < n
    runs = sum((run_lengths(select_positions(300, 0.15, strategy, rng)) for _ in range(200)), [])
    # uniform picks at 15 % form runs of mean 1/(1 - 0.15) ~ 1.18; spans and pairs are longer
    if strategy == "single":
        assert np.mean(runs) < 1.3
    elif strategy == "double":
        assert 1.9 < np.mean(runs) and np.mean(np.array(runs) % 2 == 0) > 0.8
    else:
        assert np.mean(runs) > 2.5


def test_mlm_framing_and_80_10_10():
    rng = np.random.default_rng(0)
    tokens = np.arange(6, 70, dtype=np.int64).repeat(4)  # 256 sequence tokens
    counts = {"mask": 0, "random": 0, "kept": 0}
    for _ in range(200):
        ids, labels = frame_mlm(tokens, 100, 70, "single", 0.15, rng, replace="bert")
        assert len(ids) == 100 and ids[0] == CLS_ID and ids[-1] == EOS_ID  # truncated to max_seq_len
        sel = labels != IGNORE_INDEX
        assert not sel[0] and not sel[-1] and sel.sum() == round(0.15 * 98)
        assert (labels[sel] == tokens[:98][sel[1:-1]]).all()
        assert (ids[~sel] == np.concatenate([[CLS_ID], tokens[:98], [EOS_ID]])[~sel]).all()
        counts["mask"] += int((ids[sel] == MASK_ID).sum())
        counts["kept"] += int((ids[sel] == labels[sel]).sum())
        counts["random"] += int(((ids[sel] != MASK_ID) & (ids[sel] != labels[sel])).sum())
        assert (ids[sel] >= len(SPECIALS)).sum() + (ids[sel] == MASK_ID).sum() == sel.sum()
    total = sum(counts.values())
    assert abs(counts["mask"] / total - 0.8) < 0.02
    # a random replacement equals the original 1/64 of the time, so "kept" is a bit over 10 %
    assert abs(counts["random"] / total - 0.1 * 63 / 64) < 0.015
    assert abs(counts["kept"] / total - (0.1 + 0.1 / 64)) < 0.015


def test_clm_framing():
    ids, labels = frame_clm(np.array([10, 11, 12]), 10)
    assert ids.tolist() == [CLS_ID, 10, 11, 12] and labels.tolist() == [10, 11, 12, EOS_ID]
    # a sequence that just fits still ends with <eos>
    ids, labels = frame_clm(np.arange(6, 13), 8)
    assert len(ids) == 8 and labels[-1] == EOS_ID
    # a cut sequence did not end at the cut: no <eos> label there, and nothing else changes
    ids, labels = frame_clm(np.arange(6, 30), 8)
    assert len(ids) == 8 and (labels[:-1] == ids[1:]).all() and labels[-1] == IGNORE_INDEX


@pytest.fixture(scope="module")
def oas_prepared(shared_data, tmp_path_factory):
    """A real codon corpus: the first 2,000 rows of the OAS heavy-chain unit."""
    import gzip

    root = tmp_path_factory.mktemp("oas")
    with gzip.open(shared_data / "pretrain" / "oas_parameswaran2013_heavy_100k.csv.gz", "rt") as fh:
        head = [next(fh) for _ in range(2002)]  # JSON metadata line, header, 2,000 rows
    (root / "oas.csv").write_text("".join(head))
    prepare([root / "oas.csv"], root / "out", fmt="oas", progress=False, val_fraction=0.2, test_fraction=0.2)
    return root / "out"


def _replacement_shares(ds: FramedDataset) -> tuple[dict[str, float], int]:
    counts = {"mask": 0, "random": 0, "kept": 0}
    for i in range(len(ds)):
        ids, labels = ds[(0, i)]
        sel = labels != IGNORE_INDEX
        counts["mask"] += int((ids[sel] == MASK_ID).sum())
        counts["kept"] += int((ids[sel] == labels[sel]).sum())
        counts["random"] += int(((ids[sel] != MASK_ID) & (ids[sel] != labels[sel])).sum())
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()}, total


def test_mask_replacement_policies_on_real_oas_rows(oas_prepared):
    """The paper's policy masks every selected codon; bert gives 80/10/10; evaluation always masks every label."""
    dm = {
        policy: HelmDataModule(oas_prepared, "mlm", 160, 8, mask_replace=policy, seed=3) for policy in ("mask", "bert")
    }
    shares, total = _replacement_shares(dm["mask"].dataset("train"))
    assert total > 15_000 and shares == {"mask": 1.0, "random": 0.0, "kept": 0.0}
    shares, total = _replacement_shares(dm["bert"].dataset("train"))
    assert abs(shares["mask"] - 0.8) < 0.01
    assert abs(shares["random"] - 0.1 * 63 / 64) < 0.01 and abs(shares["kept"] - (0.1 + 0.1 / 64)) < 0.01
    for split in ("val", "test"):  # whatever the training policy, no labelled token is visible in val/test inputs
        shares, total = _replacement_shares(dm["bert"].dataset(split))
        assert total > 4_000 and shares["mask"] == 1.0, split
        a, b = dm["bert"].dataset(split), dm["mask"].dataset(split)
        assert all(np.array_equal(a[i][0], b[i][0]) for i in range(len(a)))
    with pytest.raises(ValueError, match="mask replacement"):
        FramedDataset(TokenShards(oas_prepared / "train"), "mlm", 160, 70, mask_replace="random")


def test_num_samples_caps_every_split(oas_prepared):
    """--num_samples N: the first N sequences of train, val and test (a quick run also evaluates quickly)."""
    dm = HelmDataModule(oas_prepared, "mlm", 160, 8, num_samples=7)
    full = HelmDataModule(oas_prepared, "mlm", 160, 8)
    for split in ("train", "val", "test"):
        ds = dm.dataset(split)
        assert len(ds) == 7 < len(full.dataset(split)), split
        assert all(np.array_equal(ds[i][0], full.dataset(split)[i][0]) for i in range(7))


def test_truncated_counts_what_the_framing_cuts(oas_prepared):
    shards = TokenShards(oas_prepared / "train")
    lengths = shards.lengths()
    for mode, specials in (("mlm", 2), ("clm", 1)):
        ds = FramedDataset(shards, mode, 120, 70)
        assert ds.truncated() == int((lengths > 120 - specials).sum()) > 0
        cut = int(np.argmax(lengths > 120 - specials))
        ids, labels = ds[cut]
        assert len(ids) == 120
        if mode == "clm":
            assert labels[-1] == IGNORE_INDEX and EOS_ID not in labels


def test_masking_is_deterministic_per_sample(prepared):
    out, _ = prepared
    shards = TokenShards(out / "train")
    train = FramedDataset(shards, "mlm", 64, 70, "span", 0.3, seed=1)
    val = FramedDataset(shards, "mlm", 64, 70, "span", 0.3, seed=1, fixed_epoch=0)
    for i in range(10):
        assert (train[(3, i)][0] == train[(3, i)][0]).all()
        assert (val[(0, i)][0] == val[(5, i)][0]).all()
    differs = sum(not np.array_equal(train[(0, i)][1], train[(1, i)][1]) for i in range(20))
    assert differs >= 15


def test_sampler_ranks_partition_each_epoch():
    n, world = 103, 4
    for epoch in range(3):
        parts = []
        for rank in range(world):
            sampler = EpochSampler(n, seed=5, rank=rank, world_size=world)
            sampler.set_epoch(epoch)
            items = list(sampler)
            assert len(items) == len(sampler) == n // world and all(e == epoch for e, _ in items)
            parts.append([i for _, i in items])
        flat = sum(parts, [])
        assert len(flat) == len(set(flat)) == n - n % world
    s = EpochSampler(n, seed=5)
    s.set_epoch(0)
    first = [i for _, i in s]
    s.set_epoch(1)
    assert [i for _, i in s] != first
    s.set_epoch(0)
    assert [i for _, i in s] == first
    ordered = [[i for _, i in EpochSampler(10, shuffle=False, rank=r, world_size=3)] for r in range(3)]
    assert ordered == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]  # evaluation: every sample exactly once
    # Lightning replaces samplers that are not DistributedSamplers when it runs DDP; ours must stay
    assert isinstance(s, torch.utils.data.DistributedSampler)


def _batches(sampler: EpochSampler, batch_size: int) -> list[list[int]]:
    items = list(sampler)
    assert len(items) == len(sampler) and all(e == sampler.epoch for e, _ in items)
    ids = [i for _, i in items]
    return [ids[a : a + batch_size] for a in range(0, len(ids), batch_size)]


def test_length_grouped_sampler_is_a_seeded_permutation():
    lengths = np.random.default_rng(0).integers(5, 200, size=1003)
    orders = {}
    for seed in (1, 2):
        for epoch in (0, 1):
            s = LengthGroupedSampler(lengths, 16, seed=seed, chunk_batches=8)
            s.set_epoch(epoch)
            orders[seed, epoch] = [i for _, i in s]
            assert sorted(orders[seed, epoch]) == list(range(1003))  # every index exactly once
            s.set_epoch(epoch)
            assert [i for _, i in s] == orders[seed, epoch]  # a pure function of (seed, epoch)
    assert len({tuple(o) for o in orders.values()}) == 4
    s = LengthGroupedSampler(lengths, 16, seed=1)  # the default chunks: 50 batches
    batches = _batches(s, 16)
    widths = [lengths[b].max() for b in batches]
    assert pad_share(lengths, 16, np.concatenate(batches)) < 0.05 < pad_share(lengths, 16)
    assert np.corrcoef(np.arange(len(widths)), widths)[0, 1] ** 2 < 0.1  # batch order is shuffled, not sorted


@pytest.mark.parametrize("n, world, batch", [(1003, 2, 16), (1000, 2, 10), (97, 3, 8), (5, 2, 4)])
def test_length_grouped_sampler_ranks(n, world, batch):
    """Simulated DDP: disjoint samples, the same number of batches (and samples) per rank, at most R-1 dropped."""
    lengths = np.random.default_rng(n).integers(5, 200, size=n)
    per_rank = []
    for rank in range(world):
        s = LengthGroupedSampler(lengths, batch, seed=3, rank=rank, world_size=world, chunk_batches=4)
        s.set_epoch(2)
        per_rank.append(_batches(s, batch))
    assert len({len(b) for b in per_rank}) == 1 and len({len(sum(b, [])) for b in per_rank}) == 1
    flat = sum((sum(b, []) for b in per_rank), [])
    assert len(flat) == len(set(flat)) == n - n % world
    # the ranks of one step hold neighbouring runs of a sorted chunk: nobody waits long on another rank
    for step in zip(*per_rank):
        assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(step, step[1:]))


def test_length_grouped_batches_pad_under_5_percent_on_real_oas(oas_prepared):
    """The study's settings (batch 64, max_seq_len 444) on real OAS CDS: ~20 % pads today, < 5 % grouped."""
    shares = {}
    for grouped in (False, True):
        dm = HelmDataModule(oas_prepared, "mlm", 444, 64, group_by_length=grouped)
        masks = [b["attention_mask"] for b in dm.train_dataloader()]
        assert sum(len(m) for m in masks) == len(dm.dataset("train")) > 1000
        shares[grouped] = 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert shares[True] < 0.05 < 0.15 < shares[False]
    lengths = dm.dataset("train").lengths()  # pad_share (what the benchmark reports) counts what collate pads
    assert shares[False] == pytest.approx(pad_share(lengths, 64, EpochSampler(len(lengths), seed=42).order()))


def test_datamodule_batches(prepared):
    out, _ = prepared
    dm = HelmDataModule(out, "mlm", max_seq_len=32, batch_size=8, masking_strategy="double", num_samples=50)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 50
    batches = list(dm.train_dataloader())
    assert sum(len(b["input_ids"]) for b in batches) == 50
    b = batches[0]
    assert b["input_ids"].dtype == torch.long and b["attention_mask"].dtype == torch.bool
    assert b["input_ids"].shape == b["labels"].shape == b["position_ids"].shape
    assert (b["input_ids"][~b["attention_mask"]] == PAD_ID).all()
    assert (b["labels"][~b["attention_mask"]] == IGNORE_INDEX).all()
    assert b["input_ids"].shape[1] <= 32 and (b["input_ids"][:, 0] == CLS_ID).all()
    assert (b["position_ids"][0] == torch.arange(b["input_ids"].shape[1])).all()
    v1 = [x["input_ids"] for x in dm.val_dataloader()]
    v2 = [x["input_ids"] for x in dm.val_dataloader()]
    assert all(torch.equal(a, c) for a, c in zip(v1, v2))
    clm = HelmDataModule(out, "clm", max_seq_len=32, batch_size=4)
    clm.setup()
    c = next(iter(clm.test_dataloader()))
    real = c["attention_mask"]
    assert (c["labels"][:, :-1][real[:, 1:]] == c["input_ids"][:, 1:][real[:, 1:]]).all()


@pytest.mark.parametrize("grouped", [False, True])
def test_loader_resumes_mid_epoch(prepared, grouped):
    """state_dict after k batches + load_state_dict in a fresh loader == the rest of an uninterrupted epoch."""
    out, _ = prepared

    def loader():
        dm = HelmDataModule(out, "mlm", max_seq_len=40, batch_size=7, group_by_length=grouped)
        dm.setup()
        return dm.train_dataloader()

    full = loader()
    full.sampler.set_epoch(2)
    reference = [b["input_ids"] for b in full]
    first = loader()
    first.sampler.set_epoch(2)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert state == {"epoch": 2, "samples": 21}
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning sets the epoch again after loading: the position must survive
    rest = [b["input_ids"] for b in resumed]
    assert len(rest) == len(reference) - 3
    assert all(torch.equal(a, b) for a, b in zip(rest, reference[3:]))
    resumed.sampler.set_epoch(3)  # the next epoch starts from its beginning
    assert len(list(resumed)) == len(reference)


@pytest.mark.slow
@pytest.mark.parametrize(  # mid first epoch; early in the second epoch (23 batches/epoch)
    "stop_at, grouped", [(7, False), (25, False), (7, True), (25, True)]
)
def test_lightning_resume_sees_the_same_batches(prepared, tmp_path, stop_at, grouped):
    """A real Trainer: train 30 steps straight vs stop at a checkpoint and resume; every step's batch is equal."""
    import lightning.pytorch as pl

    out, _ = prepared

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(70, 4)
            self.seen: list[torch.Tensor] = []

        def training_step(self, batch, _):
            self.seen.append(batch["input_ids"].clone())
            return self.emb(batch["input_ids"]).sum()

        def configure_optimizers(self):
            assert self.trainer.estimated_stepping_batches > 0  # touching it must not break the restore
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(max_steps, ckpt_path=None, save_every=None):
        module = Recorder()
        dm = HelmDataModule(out, "mlm", max_seq_len=40, batch_size=8, group_by_length=grouped)
        callbacks = (
            [pl.callbacks.ModelCheckpoint(tmp_path / "ck", every_n_train_steps=save_every)] if save_every else []
        )
        trainer = pl.Trainer(
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=bool(save_every),
            callbacks=callbacks,
            limit_val_batches=0,
        )
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module.seen

    straight = fit(30)
    first = fit(stop_at, save_every=stop_at)
    (ckpt,) = (tmp_path / "ck").glob("*.ckpt")
    resumed = fit(30, ckpt_path=str(ckpt))
    assert len(first) + len(resumed) == len(straight) == 30
    assert all(torch.equal(a, b) for a, b in zip(first + resumed, straight))


def test_worker_processes_give_the_same_batches(prepared):
    """Masking depends only on (seed, epoch, index), so loader workers change nothing."""
    out, _ = prepared
    batches = {}
    for workers in (0, 2):
        dm = HelmDataModule(out, "mlm", max_seq_len=40, batch_size=16, masking_strategy="span", num_workers=workers)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        batches[workers] = [b["input_ids"] for b in loader]
    assert len(batches[0]) == len(batches[2])
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2]))
