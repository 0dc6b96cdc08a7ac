"""Tokenizers: vectorized k-mer encoding against a brute-force dict loop, learned HF tokenizers round-trip."""

from __future__ import annotations

import gzip
import itertools
import json

import numpy as np
import pytest

from helm.codons import SPECIALS, UNK_ID
from helm.tokenizers import create_tokenizer, list_tokenizers, load_tokenizer


def brute_kmers(seq: str, k: int, stride: int) -> list[int]:
    """Definition: windows at 0, stride, ... that fit; id = 6 + rank of the k-mer in ACGT order; else <unk>."""
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    table = {km: len(SPECIALS) + i for i, km in enumerate(kmers)}
    seq = seq.upper().replace("U", "T")
    return [table.get(seq[i : i + k], UNK_ID) for i in range(0, len(seq) - k + 1, stride)]


def random_seqs(rng: np.random.Generator, n: int, alphabet: str = "ACGT", max_len: int = 40) -> list[str]:
    return ["".join(rng.choice(list(alphabet), size=int(rng.integers(0, max_len)))) for _ in range(n)]


@pytest.mark.parametrize(
    "name,k,overlap", [("3mer", 3, 0), ("3mer", 3, 1), ("3mer", 3, 2), ("6mer", 6, 0), ("6mer", 6, 3)]
)
def test_kmer_encode_matches_brute_force(name, k, overlap):
    rng = np.random.default_rng(0)
    tok = create_tokenizer(name, overlap=overlap)
    seqs = random_seqs(rng, 200, "ACGTNU") + ["", "A", "ACG", "acgu"]
    batch = tok.encode_batch(seqs)
    for seq, enc in zip(seqs, batch):
        expected = brute_kmers(seq, k, k - overlap)
        assert tok.encode(seq).tolist() == expected
        assert enc.tolist() == expected


@pytest.mark.parametrize("name,k", [("3mer", 3), ("6mer", 6)])
def test_whole_kmer_fast_path_matches_brute_force(name, k):
    """Batches of whole k-mers take the reshape path; N, U, lower case and junk bytes must still be right."""
    rng = np.random.default_rng(2)
    tok = create_tokenizer(name)
    seqs = ["".join(rng.choice(list("ACGTacgtUuN?é"), size=k * int(rng.integers(0, 30)))) for _ in range(300)]
    clean = ["".join(rng.choice(list("ACGT"), size=k * int(rng.integers(1, 30)))) for _ in range(300)]
    for batch in (seqs, clean):
        flat, bounds = tok.encode_flat(batch)
        assert flat.dtype == tok.dtype and bounds[0] == 0 and bounds[-1] == len(flat)
        for i, seq in enumerate(batch):
            assert flat[bounds[i] : bounds[i + 1]].tolist() == brute_kmers(seq, k, k)


def test_codon_vocab_layout_and_decode():
    tok = create_tokenizer("codon")
    assert tok.name == "3mer" and len(tok) == 70
    assert tok.vocab.tokens[: len(SPECIALS)] == SPECIALS
    assert tok.vocab.tokens[6] == "AAA" and tok.vocab.tokens[-1] == "TTT"
    seq = "ATGGCCTTTTAA"
    assert tok.decode(tok.encode(seq)) == seq
    six = create_tokenizer("6mer", overlap=3)
    assert six.decode(six.encode("ATGGCCTTTTAA")) == "ATGGCCTTTTAA"


def test_nuc_tokenizer():
    tok = create_tokenizer("nuc")
    ids = tok.encode("ACGTNUx")
    idx = tok.vocab.index
    assert ids.tolist() == [idx["A"], idx["C"], idx["G"], idx["T"], idx["N"], idx["T"], UNK_ID]
    seqs = random_seqs(np.random.default_rng(1), 50, "ACGTN")
    assert [a.tolist() for a in tok.encode_batch(seqs)] == [tok.encode(s).tolist() for s in seqs]
    assert tok.decode(tok.encode("ACGTN")) == "ACGTN"


def test_aa_tokenizer_one_token_per_residue():
    from helm.codons import AMINO_ACIDS, aa_vocab

    tok = create_tokenizer("aa")
    assert tok.vocab == aa_vocab() and len(tok) == 28
    brute = [aa_vocab().tokens.index(ch) for ch in AMINO_ACIDS + "*X"]
    assert tok.encode(AMINO_ACIDS + "*X").tolist() == brute
    assert tok.encode(AMINO_ACIDS.lower()).tolist() == brute[:20]
    assert tok.encode("BZUOJ-").tolist() == [UNK_ID] * 6  # ambiguous / rare residues are not silently mapped
    seqs = random_seqs(np.random.default_rng(2), 50, AMINO_ACIDS + "*X")
    ids, bounds = tok.encode_flat(seqs)
    assert [ids[bounds[i] : bounds[i + 1]].tolist() for i in range(len(seqs))] == [tok.encode(s).tolist() for s in seqs]
    assert [tok.decode(t) for t in tok.encode_batch(seqs)] == seqs
    with pytest.raises(ValueError, match="no overlap"):
        create_tokenizer("aa", overlap=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown tokenizer"):
        create_tokenizer("7mer")
    with pytest.raises(ValueError, match="overlap"):
        create_tokenizer("3mer", overlap=3)
    with pytest.raises(ValueError, match="overlap"):
        create_tokenizer("bpe", overlap=1)
    assert set(list_tokenizers()) >= {"3mer", "codon", "nuc", "6mer", "bpe", "wp", "ug"}


@pytest.mark.parametrize("name,overlap", [("6mer", 3), ("3mer", 0), ("nuc", 0), ("aa", 0)])
def test_fixed_tokenizer_save_load(name, overlap, tmp_path):
    tok = create_tokenizer(name, overlap=overlap)
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert (type(again), again.name, again.k, again.overlap, again.vocab) == (
        type(tok),
        tok.name,
        tok.k,
        tok.overlap,
        tok.vocab,
    )


@pytest.fixture(scope="module")
def oas_sample(shared_data):
    """300 real OAS alignments (gaps removed, whole codons), read straight from the gzip CSV."""
    import csv

    out = []
    with gzip.open(shared_data / "pretrain/oas_parameswaran2013_heavy_100k.csv.gz", "rt") as fh:
        for row in csv.DictReader(fh):
            s = row["sequence_alignment"].replace("-", "")
            out.append(s[: len(s) // 3 * 3])
            if len(out) == 300:
                break
    return out


@pytest.mark.parametrize("name", ["bpe", "wp", "ug"])
def test_learned_tokenizer_roundtrip(name, oas_sample, tmp_path):
    train, held = oas_sample[:250], oas_sample[250:]
    tok = create_tokenizer(name, vocab_size=120)
    tok.train(train)
    assert tok.vocab.tokens[: len(SPECIALS)] == SPECIALS
    assert len(tok) <= 120
    enc = tok.encode_batch(held)
    for seq, ids in zip(held, enc):
        assert ids.min() >= len(SPECIALS)  # no specials added, no <unk> on ACGT text
        assert tok.decode(ids) == seq
        assert ids.tolist() == tok.encode(seq).tolist()
    # learned merges actually compress the sequence
    assert np.mean([len(e) / len(s) for e, s in zip(enc, held)]) < 0.7
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.name == name and again.vocab == tok.vocab
    assert [a.tolist() for a in again.encode_batch(held)] == [e.tolist() for e in enc]


@pytest.mark.parametrize("name", ["bpe", "wp", "ug"])
def test_learned_tokenizer_reads_rna_and_lower_case_as_the_kmer_ones_do(name, oas_sample, tmp_path):
    """Issue 22, point 2: RNA and lower-case text get the ids of the DNA they spell (as the k-mer tokenizers give),
    never silent <unk> rows; before training too (the sample trained on here is part RNA / lower case), after a
    save and load, and for a tokenizer file written before the normalizer existed."""
    train, held = oas_sample[:250], oas_sample[250:]
    mixed = [s.lower() if i % 3 == 0 else s.replace("T", "U") if i % 3 == 1 else s for i, s in enumerate(train)]
    tok = create_tokenizer(name, vocab_size=120)
    tok.train(mixed)
    learned = [t.removeprefix("##") for t in tok.vocab.tokens[len(SPECIALS) :]]
    assert learned and all(t == t.upper() and "U" not in t for t in learned)  # training read them all as DNA
    variants = [lambda s: s, str.lower, lambda s: s.replace("T", "U"), lambda s: s.lower().replace("t", "u")]
    tok.save(tmp_path / "new")
    payload = json.loads((tmp_path / "new" / "tokenizer.json").read_text())
    payload["normalizer"] = None  # as files written before this change
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tokenizer.json").write_text(json.dumps(payload))
    for reader in (tok, load_tokenizer(tmp_path / "new"), load_tokenizer(tmp_path / "old")):
        for seq in held:
            dna = reader.encode(seq).tolist()
            assert UNK_ID not in dna
            assert all(reader.encode(v(seq)).tolist() == dna for v in variants)
    assert tok.encode("acgn").tolist()[-1] == UNK_ID  # what is no base stays <unk>


def test_untrained_learned_tokenizer_refuses():
    with pytest.raises(RuntimeError, match="not trained"):
        create_tokenizer("bpe").encode("ACGT")


@pytest.mark.parametrize("name", list_tokenizers())
def test_every_registered_tokenizer_round_trips(name, oas_sample, tmp_path):
    """The registry contract on real sequences: ``encode``, ``encode_batch`` and ``encode_flat`` agree, ids fit the
    vocabulary and the shard dtype, ``decode`` inverts ``encode``, and save -> load reproduces every encoding."""
    from helm.codons import translate

    tok = create_tokenizer(name, vocab_size=120) if name in ("bpe", "wp", "ug") else create_tokenizer(name)
    seqs = [translate(s) for s in oas_sample] if name == "aa" else [s[: len(s) // 6 * 6] for s in oas_sample]
    tok.train(seqs[:250])
    held = seqs[250:]
    single = [tok.encode(s).tolist() for s in held]
    assert [e.tolist() for e in tok.encode_batch(held)] == single
    flat, bounds = tok.encode_flat(held)
    assert flat.dtype == tok.dtype and [flat[bounds[i] : bounds[i + 1]].tolist() for i in range(len(held))] == single
    assert 0 <= flat.min() and flat.max() < len(tok) <= np.iinfo(tok.dtype).max + 1
    assert [tok.decode(ids) for ids in single] == held
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.name == tok.name and again.vocab == tok.vocab
    assert [again.encode(s).tolist() for s in held] == single
