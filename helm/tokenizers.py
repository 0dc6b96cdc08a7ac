"""Tokenizers: fixed k-mer / nucleotide / amino-acid tokenizers and learned BPE / WordPiece / Unigram ones.

Every tokenizer shares the special tokens of ``helm.codons.SPECIALS`` at ids 0..5, so framing (``<cls>``,
``<eos>``, ``<mask>``) and padding work the same for all of them.

k-mer encoding is vectorized: the sequence bytes go through a 256-entry lookup table to 2-bit codes, and
the k-mer index of every window is a dot product of ``k`` strided views with powers of 4 -- no Python loop
over codons. ``overlap`` makes the window stride ``k - overlap`` (the seed's ``--overlap``).

Learned tokenizers wrap HF ``tokenizers`` and are trained on the training split only (``helm.prepare`` does
that). A sequence is pre-split into words of ``WORD_LENGTH`` (48) bases, in frame from position 0, so a learned
token never spans such a boundary: whole-sequence words made BPE/WordPiece/Unigram training and WordPiece
encoding take minutes on 100k antibody sequences. Learned tokenizers read text as the k-mer ones do: a normalizer
(``sequence_normalizer``: ASCII upper case, U -> T) runs before training and before every encode, so RNA and
lower-case input get the ids of the DNA they spell, never ``<unk>``. ``save(dir)`` writes ``dir/tokenizer.json``: the HF
file for learned tokenizers, a small JSON (``{"helm_tokenizer": {...}}``) for the fixed ones;
``load_tokenizer(dir)`` reads either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from helm.codons import SPECIALS, UNK_ID, Vocab, aa_vocab, kmer_vocab, nuc_vocab

TOKENIZER_FILE = "tokenizer.json"
LEARNED = ("bpe", "wp", "ug")
TOKENIZERS = ("3mer", "codon", "nuc", "6mer", "aa", *LEARNED)  # the registry's names (`--tokenizer` choices)
# tokenizers whose vocabulary has a codon hierarchy (helm/codons.py build_tree): HXE, soft labels, the amino-acid
# losses and the aa / severity metrics need one
CODON_TOKENIZERS = ("3mer", "6mer")
_INVALID = 255
LEARNED_VOCAB_SIZE = 256  # the default size of a learned vocabulary (`--vocab_size` of prepare and train)
WORD_LENGTH = 48  # learned tokenizers: a token never spans a 48-nt (16-codon) boundary of the sequence
# how many (deduplicated, training-split) sequences a learned tokenizer is trained on by default: Unigram's EM
# is by far the slowest (about 10 s per 1000 antibody sequences on 2 busy cores)
TRAIN_SAMPLES = {"bpe": 50_000, "wp": 50_000, "ug": 5_000}

# byte -> 2-bit nucleotide code (A0 C1 G2 T3; U counts as T); everything else is invalid
_CODE = np.full(256, _INVALID, dtype=np.uint8)
for _i, _c in enumerate("ACGT"):
    _CODE[ord(_c)] = _CODE[ord(_c.lower())] = _i
_CODE[ord("U")] = _CODE[ord("u")] = 3


_CODE_TABLE = bytes(_CODE.tolist())


def sequence_normalizer(rna_as_dna: bool = True):
    """A ``tokenizers`` normalizer that reads text as helm's k-mer tokenizers do: ASCII letters upper-cased (only
    ASCII, as the byte lookup tables), and with ``rna_as_dna`` U read as T (not for amino acids: U is no residue)."""
    from tokenizers import normalizers

    steps = [normalizers.Replace(c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    if rna_as_dna:
        steps.append(normalizers.Replace("U", "T"))
    return normalizers.Sequence(steps)


def list_tokenizers() -> list[str]:
    return list(TOKENIZERS)


def _as_bytes(seqs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All sequences as one uint8 array plus start offsets (len(seqs) + 1)."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buf = np.frombuffer("".join(seqs).encode("ascii", errors="replace"), dtype=np.uint8)
    return buf, offsets


class KmerTokenizer:
    """k-mers with window stride ``k - overlap``; k=3 is the codon tokenizer. Trailing bases that do not
    fill a window are dropped (``helm prepare`` stores such sequences trimmed the same way and counts them as
    ``tail_trimmed``; the plain codon tokenizer's inputs must be whole codons there). A window containing
    anything but ACGT(U) becomes ``<unk>``."""

    def __init__(self, k: int = 3, overlap: int = 0, name: str | None = None):
        if not 0 <= overlap < k:
            raise ValueError(f"overlap must be in [0, {k - 1}] for {k}-mers, got {overlap}")
        self.k, self.overlap, self.stride = k, overlap, k - overlap
        self.name = name or f"{k}mer"
        self.vocab: Vocab = kmer_vocab(k)
        self._weights = (4 ** np.arange(k - 1, -1, -1)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if len(self) <= 256 else np.uint16)

    def num_tokens(self, length: int) -> int:
        return 0 if length < self.k else (length - self.k) // self.stride + 1

    def _ids_at(self, codes: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """k-mer id of the windows starting at ``starts``; ``<unk>`` where a window holds a non-ACGT base."""
        ids = np.zeros(len(starts), dtype=np.int32)
        bad = np.zeros(len(starts), dtype=bool)
        for j in range(self.k):
            col = codes[starts + j]
            ids += col.astype(np.int32) * int(self._weights[j])
            bad |= col == _INVALID
        ids += len(SPECIALS)
        ids[bad] = UNK_ID
        return ids

    def _encode_codes(self, codes: np.ndarray) -> np.ndarray:
        n = self.num_tokens(len(codes))
        return self._ids_at(codes, np.arange(n, dtype=np.int64) * self.stride)

    def encode(self, seq: str) -> np.ndarray:
        return self._encode_codes(_CODE[np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)])

    def encode_flat(self, seqs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All token ids of the batch in one array (dtype ``self.dtype``) plus per-sequence bounds (n + 1):
        sequence i is ``ids[bounds[i]:bounds[i + 1]]``. This is the form shards store, so ``helm prepare``
        uses it directly. One vectorized pass over the concatenated batch."""
        if not seqs:
            return np.zeros(0, dtype=self.dtype), np.zeros(1, dtype=np.int64)
        buf, offsets = _as_bytes(seqs)
        lengths = np.diff(offsets)
        if self.stride == self.k and not (lengths % self.k).any():
            # the common case (in-frame CDS, non-overlapping k-mers): the windows tile the buffer exactly.
            # bytes.translate maps every byte to its 2-bit code (255 = not a base) at memcpy speed.
            codes = buf.base.translate(_CODE_TABLE)  # buf.base: the joined bytes
            rows = np.frombuffer(codes, dtype=np.uint8).reshape(-1, self.k)
            ids = rows @ self._weights.astype(self.dtype)  # uint8 for codons: 4**3 + 6 ids fit
            ids += np.asarray(len(SPECIALS), dtype=self.dtype)
            if b"\xff" in codes:  # rare: some byte is not a base (N, ...): its k-mer is <unk>
                bad = np.flatnonzero(np.frombuffer(codes, dtype=np.uint8) == _INVALID) // self.k
                ids[bad] = UNK_ID
            return ids, offsets // self.k
        counts = np.where(lengths >= self.k, (lengths - self.k) // self.stride + 1, 0)
        bounds = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        # window w of sequence s starts at offsets[s] + (w - bounds[s]) * stride
        first = np.repeat(offsets[:-1] - bounds[:-1] * self.stride, counts)
        starts = first + np.arange(bounds[-1], dtype=np.int64) * self.stride
        return self._ids_at(_CODE[buf], starts).astype(self.dtype), bounds

    def encode_batch(self, seqs: Sequence[str]) -> list[np.ndarray]:
        """``encode`` of every sequence (int32 arrays), computed by one ``encode_flat`` call."""
        ids, bounds = self.encode_flat(seqs)
        ids = ids.astype(np.int32)
        b = bounds.tolist()
        return [ids[b[i] : b[i + 1]] for i in range(len(seqs))]

    def decode(self, ids: Iterable[int]) -> str:
        """Inverse of ``encode`` for fixed k-mers (overlapping windows contribute their last ``stride`` bases);
        special tokens are skipped."""
        toks = [self.vocab.tokens[i] for i in ids if int(i) >= len(SPECIALS)]
        if not toks:
            return ""
        return toks[0] + "".join(t[self.overlap :] for t in toks[1:])

    def train(self, seqs: Iterable[str]) -> None:
        """Fixed vocabulary: nothing to learn."""

    def config(self) -> dict:
        return {"name": self.name, "k": self.k, "overlap": self.overlap}

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"helm_tokenizer": {**self.config(), "kind": self.vocab.kind}, "vocab": list(self.vocab.tokens)}
        path.write_text(json.dumps(payload, indent=1) + "\n")
        return path


class CharTokenizer(KmerTokenizer):
    """One token per character through a 256-entry lookup table (either case); ``aliases`` map extra letters
    onto vocabulary tokens, anything else is ``<unk>``. The base of ``nuc`` and ``aa``."""

    def __init__(self, name: str, vocab: Vocab, aliases: dict[str, str] | None = None):
        super().__init__(k=1, overlap=0, name=name)
        self.vocab = vocab
        self._lut = np.full(256, UNK_ID, dtype=np.int32)
        letters = {t: t for t in vocab.tokens[len(SPECIALS) :]} | (aliases or {})
        for ch, token in letters.items():
            self._lut[ord(ch)] = self._lut[ord(ch.lower())] = vocab.index[token]

    def encode(self, seq: str) -> np.ndarray:
        return self._lut[np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)]

    def encode_flat(self, seqs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        buf, offsets = _as_bytes(seqs)
        return self._lut[buf].astype(self.dtype), offsets

    def encode_batch(self, seqs: Sequence[str]) -> list[np.ndarray]:
        if not seqs:
            return []
        buf, offsets = _as_bytes(seqs)
        return np.split(self._lut[buf], offsets[1:-1])


class NucTokenizer(CharTokenizer):
    """One token per base over ACGTN (``nuc_vocab``); U reads as T, other letters are ``<unk>``."""

    def __init__(self, name: str = "nuc"):
        super().__init__(name, nuc_vocab(), aliases={"U": "T"})


class AminoAcidTokenizer(CharTokenizer):
    """One token per residue over the 20 amino acids, ``*`` (stop) and ``X`` (unknown) (``aa_vocab``): the
    seed's ``--data-type aa``. Other letters (B, Z, U, O, J) are ``<unk>``; ``helm prepare`` rejects them."""

    def __init__(self, name: str = "aa"):
        super().__init__(name, aa_vocab())


class LearnedTokenizer:
    """BPE (``bpe``), WordPiece (``wp``) or Unigram (``ug``) from HF ``tokenizers``, specials at ids 0..5."""

    def __init__(self, name: str = "bpe", vocab_size: int = LEARNED_VOCAB_SIZE, hf_tokenizer=None):
        if name not in LEARNED:
            raise ValueError(f"unknown learned tokenizer {name!r}")
        self.name, self.vocab_size, self.overlap = name, vocab_size, 0
        self._tok = hf_tokenizer
        if hf_tokenizer is not None and hf_tokenizer.normalizer is None:
            # written before learned tokenizers had a normalizer: they were trained on cleaned (upper-case DNA)
            # sequences, which the normalizer leaves as they are, so adding it only mends RNA / lower-case input
            hf_tokenizer.normalizer = sequence_normalizer()
        self.vocab: Vocab | None = self._vocab_from_hf() if hf_tokenizer is not None else None

    def __len__(self) -> int:
        return len(self._require())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32)

    def _require(self) -> Vocab:
        if self.vocab is None:
            raise RuntimeError(f"the {self.name} tokenizer is not trained yet: call train() or load_tokenizer()")
        return self.vocab

    def _vocab_from_hf(self) -> Vocab:
        size = self._tok.get_vocab_size(with_added_tokens=True)
        tokens = tuple(self._tok.id_to_token(i) for i in range(size))
        return Vocab(kind="learned", tokens=tokens, k=1)  # Vocab checks the specials come first

    def train(self, seqs: Iterable[str]) -> None:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        specials = list(SPECIALS)
        unk = SPECIALS[UNK_ID]
        if self.name == "bpe":
            tok = Tokenizer(models.BPE(unk_token=unk))
            trainer = trainers.BpeTrainer(vocab_size=self.vocab_size, special_tokens=specials, show_progress=False)
        elif self.name == "wp":
            # sequences are single long "words": lift WordPiece's 100-character word limit
            tok = Tokenizer(models.WordPiece(unk_token=unk, max_input_chars_per_word=1_000_000))
            tok.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(
                vocab_size=self.vocab_size, special_tokens=specials, show_progress=False
            )
        else:
            tok = Tokenizer(models.Unigram())
            # a smaller seed vocabulary than the default million: EM pruning rounds dominate the training time
            trainer = trainers.UnigramTrainer(
                vocab_size=self.vocab_size,
                special_tokens=specials,
                unk_token=unk,
                show_progress=False,
                seed_size=20_000,
            )
        tok.normalizer = sequence_normalizer()  # before training: training and every later encode read alike
        # cut every sequence into words of WORD_LENGTH bases (the last one shorter): training and encoding costs
        # grow fast with the word length (300-nt words took minutes), and repeated words are counted once
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(f".{{1,{WORD_LENGTH}}}"), behavior="isolated")
        tok.train_from_iterator((s for s in seqs), trainer=trainer)
        # encode with exactly what `save` writes: Unigram scores lose precision in the JSON, which can flip
        # ties between equally likely segmentations after a reload
        self._tok = type(tok).from_str(tok.to_str())
        self.vocab = self._vocab_from_hf()

    @property
    def hf(self):
        """The trained ``tokenizers.Tokenizer`` (normalizer included) that ``encode`` runs."""
        self._require()
        return self._tok

    def encode(self, seq: str) -> np.ndarray:
        self._require()
        return np.asarray(self._tok.encode(seq, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, seqs: Sequence[str]) -> list[np.ndarray]:
        self._require()
        encs = self._tok.encode_batch_fast(list(seqs), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encs]

    def encode_flat(self, seqs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        arrays = self.encode_batch(seqs)
        bounds = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=bounds[1:])
        ids = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
        return ids.astype(self.dtype), bounds

    def decode(self, ids: Iterable[int]) -> str:
        toks = [self._require().tokens[int(i)] for i in ids if int(i) >= len(SPECIALS)]
        return "".join(t[2:] if t.startswith("##") else t for t in toks)

    def config(self) -> dict:
        return {"name": self.name, "vocab_size": len(self) if self.vocab else self.vocab_size}

    def save(self, directory: str | Path) -> Path:
        self._require()
        path = Path(directory) / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path))
        return path


Tokenizer = KmerTokenizer | CharTokenizer | LearnedTokenizer


def create_tokenizer(name: str, overlap: int = 0, **kw) -> Tokenizer:
    """``3mer``/``codon``, ``nuc``, ``6mer``, ``aa`` (fixed) or ``bpe``/``wp``/``ug`` (learned; ``vocab_size=256``)."""
    name = name.lower()
    if name in ("3mer", "codon"):
        return KmerTokenizer(3, overlap, name="3mer")
    if name == "6mer":
        return KmerTokenizer(6, overlap, name="6mer")
    if name == "nuc":
        if overlap:
            raise ValueError("the nuc tokenizer has no overlap (one base per token)")
        return NucTokenizer()
    if name == "aa":
        if overlap:
            raise ValueError("the aa tokenizer has no overlap (one residue per token)")
        return AminoAcidTokenizer()
    if name in LEARNED:
        if overlap:
            raise ValueError(f"--overlap applies to k-mer tokenizers, not to the learned {name} tokenizer")
        return LearnedTokenizer(name, vocab_size=int(kw.get("vocab_size", LEARNED_VOCAB_SIZE)))
    raise ValueError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")


def tokenizer_alphabet(tok: Tokenizer) -> str:
    """What the tokenizer reads: ``aa`` (the amino-acid tokenizer) or ``nuc`` (every other one, learned included)."""
    return "aa" if getattr(getattr(tok, "vocab", None), "kind", None) == "aa" else "nuc"


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read ``directory/tokenizer.json`` (or the file itself) written by ``save``."""
    path = Path(directory)
    path = path / TOKENIZER_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    payload = json.loads(path.read_text())
    if "helm_tokenizer" in payload:
        cfg = payload["helm_tokenizer"]
        tok = create_tokenizer(cfg["name"], overlap=int(cfg.get("overlap", 0)))
        if list(tok.vocab.tokens) != payload.get("vocab"):
            raise ValueError(f"{path}: vocabulary differs from the built-in {cfg['name']} vocabulary")
        return tok
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(path))
    kind = {"BPE": "bpe", "WordPiece": "wp", "Unigram": "ug"}.get(payload.get("model", {}).get("type"))
    if kind is None:
        raise ValueError(f"{path}: not a helm tokenizer (model type {payload.get('model', {}).get('type')!r})")
    return LearnedTokenizer(kind, vocab_size=hf.get_vocab_size(), hf_tokenizer=hf)
