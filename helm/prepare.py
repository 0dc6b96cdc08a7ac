"""`helm prepare`: clean, validate, deduplicate, split and encode sequence files into token shards.

    helm prepare --input a.csv.gz b.fasta.gz --output prepared/ [--tokenizer 3mer] [--threads 2]
    helm prepare --train_file train.txt --val_file val.txt --test_file test.txt --output prepared/
    helm prepare --merge parts/unit1 parts/unit2 ... --output prepared/          # fan-out, then merge
    helm prepare --input proteins.fasta --tokenizer aa --output prepared/          # amino-acid sequences
    helm prepare --input cds.txt --tokenizer aa --translate --output prepared/      # nucleotide CDS -> protein

Alphabet: the tokenizer decides what a sequence is. Nucleotide tokenizers clean to ACGTN (U read as T, gaps
removed); the ``aa`` tokenizer cleans to the 20 amino acids, ``*`` and ``X``; other letters reject the row as
``invalid_characters``, and 30+ letters of only ACGTN as ``looks_like_nucleotides`` (a forgotten ``--translate``).
OAS rows give their in-frame CDS, translated when the tokenizer is ``aa``.

A prepared directory (read by ``helm.data.TokenShards`` / ``HelmDataModule``)::

    tokenizer.json    the tokenizer (learned ones are trained on the training split only)
    summary.json      kept / rejected counts (per reason, per split, per file), tail_trimmed, tokens, settings,
                      fingerprint
    rejects.tsv       file, row (1-based line), reason, sequence -- every row that was not kept
    tail_trimmed.hashes  sorted uint64 dedup keys of the kept sequences that lost a partial k-mer window (merge
                      reads them to count exactly)
    train/ val/ test/ index.json + per shard, raw little-endian arrays: shard-NNNNN.tokens (token ids, dtype
                      in the index), shard-NNNNN.offsets (int64, n+1), shard-NNNNN.hashes (uint64 dedup keys)

Streaming and bounded memory: inputs are read once, in chunks of ``chunk_rows`` records; tokens, offsets and
keys go straight to the open shard files, so memory holds one chunk plus 8 bytes per distinct sequence (the
dedup keys, the only state that grows with the corpus: 122 MB for the paper's 15.3M sequences), and 8 more
per tail-trimmed one (k-mer tokenizers other than the codon one).

k-mer windows: a sequence whose tail does not fill a whole window (6mer, or 3mer with ``--overlap 1``) is
kept with that tail cut off, as the tokenizer would drop it anyway; such rows are counted as ``tail_trimmed``
(per split, within ``kept``). Only the plain codon tokenizer (3mer, overlap 0) rejects a length that is not a
multiple of 3 (``length_not_multiple_of_3``): that is not an in-frame CDS.

Split and dedup are keyed on the *cleaned* (and tail-trimmed) sequence: key = blake2b-64(sequence). A row
whose key was seen before is rejected as ``duplicate`` (the first occurrence is kept). The split is a pure
function of the key and ``--seed`` (helm/splits.py): a sequence lands in the same split whatever the input order,
partitioning or thread count, and duplicates can never straddle splits. With explicit ``--train_file/--val_file/
--test_file`` the files are the splits (read in the order test, val, train, so a sequence shared by a
held-out file and the training file is removed from training, counted as ``duplicate``).

Crash safety: everything is written under ``<output>.partial/`` (shard files themselves as ``*.tmp`` then
renamed); the finished directory is renamed to ``<output>`` last, so a reader never sees a half-written
shard. A rerun after a kill discards ``<output>.partial`` and restarts; output is deterministic, so the
result is byte-identical to an uninterrupted run. A rerun whose inputs and settings match a finished
``<output>`` (``summary.json`` fingerprint) does nothing. One writer per output: a second prepare on the same
``<output>`` is refused while the first runs (``helm.files.exclusive``); docs/ARCHITECTURE.md ("Faults").

Fan-out / merge: every prepared directory can be merged. Prepare each OAS unit into its own directory
(one job each, same ``--tokenizer``/``--seed``/fractions; for learned tokenizers pass the same
``--tokenizer_file``), then ``--merge`` them: parts are read in sorted path order, sequences already seen
in an earlier part are rejected as ``duplicate``, shards are rewritten with the same size bound, rejects
and counts are combined. Because the split is a function of the sequence, the merged result has the same
splits as preparing all units in one run.

Settings: the fields of `PrepareSettings` (with their help text); the flags of ``helm prepare`` are generated
from them and ``prepare(inputs, output, **settings)`` takes the same names. Contracts: docs/ARCHITECTURE.md
("Prepared data").

Threads: ``--threads N`` cleans/validates chunks in N-1 worker processes (bounded queue, results consumed
in input order, so output does not depend on N); the main process deduplicates, encodes and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from helm.args import ConfigError, HelmParser, add_dataclass, command_errors, from_values, kind_of
from helm.files import atomic_write, exclusive
from helm.io import (
    DataError,
    clean_protein,
    clean_sequence,
    detect_format,
    longest_orf,
    oas_cds_batch,
    read_records,
    translate_frame,
    uninformative,
)
from helm.splits import SPLITS, sequence_key, split_of
from helm.tokenizers import (
    LEARNED_VOCAB_SIZE,
    TOKENIZER_FILE,
    TRAIN_SAMPLES,
    create_tokenizer,
    list_tokenizers,
    load_tokenizer,
    tokenizer_alphabet,
)

INDEX_FILE = "index.json"
SUMMARY_FILE = "summary.json"
REJECTS_FILE = "rejects.tsv"
EXPORT_TMP = "export.txt.tmp"  # --export_txt, staged with the rest until the output is published
TRIMMED_FILE = "tail_trimmed.hashes"
FORMAT_VERSION = 1
SHARD_FILES = ("tokens", "offsets", "hashes")


# ------------------------------------------------------------------------------------------ hashing


class SeenKeys:
    """A set of uint64 keys as sorted numpy runs (merged LSM-style): 8 bytes per key, vectorized lookups."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Insert ``keys``; returns a mask of the ones not seen before (first occurrence within ``keys``)."""
        keys = np.asarray(keys, dtype=np.uint64)
        new = np.zeros(len(keys), dtype=bool)
        if not len(keys):
            return new
        _, first = np.unique(keys, return_index=True)
        new[first] = True
        for run in self.runs:
            pos = np.searchsorted(run, keys)
            hit = (pos < len(run)) & (run[np.minimum(pos, len(run) - 1)] == keys)
            new &= ~hit
        fresh = np.sort(keys[new])
        if len(fresh):
            self.runs.append(fresh)
            while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
                merged = np.concatenate([self.runs.pop(), self.runs.pop()])
                merged.sort()  # in place: peak memory is the two runs plus their concatenation
                self.runs.append(merged)
        return new


# ------------------------------------------------------------------------------------------ shards


class ShardWriter:
    """Appends sequences to ``shard-NNNNN.{tokens,offsets,hashes}``; a shard closes before the sequence that would
    take it past ``shard_tokens`` tokens (it always holds at least one). All three files are streamed (memory
    holds one chunk) and appear under their final names only when the shard is complete."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int, long_limit: int | None = None):
        self.dir, self.dtype, self.shard_tokens, self.long_limit = directory, np.dtype(dtype), shard_tokens, long_limit
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self.sequences = self.tokens = self.longer = 0
        self._files: dict[str, object] = {}
        self._n_tok = self._n_seq = 0

    def _name(self) -> str:
        return f"shard-{len(self.shards):05d}"

    def add(self, flat: np.ndarray, lengths: np.ndarray, keys: np.ndarray) -> None:
        """Append sequences given as one flat token array, their lengths and their dedup keys."""
        if not len(lengths):
            return
        if self.long_limit is not None:
            self.longer += int((lengths > self.long_limit).sum())
        ends = np.cumsum(lengths)
        i = 0
        while i < len(lengths):
            before = int(ends[i - 1]) if i else 0
            take = int(np.searchsorted(ends[i:] - before, self.shard_tokens - self._n_tok, side="right"))
            if take == 0:
                if self._n_seq:
                    self._flush()
                    continue
                take = 1  # a single sequence longer than the bound gets a shard of its own
            self._write(flat[before : int(ends[i + take - 1])], lengths[i : i + take], keys[i : i + take])
            i += take
            if i < len(lengths):
                self._flush()

    def _write(self, flat: np.ndarray, lengths: np.ndarray, keys: np.ndarray) -> None:
        if not self._files:
            self._files = {ext: open(self.dir / f"{self._name()}.{ext}.tmp", "wb") for ext in SHARD_FILES}
            self._files["offsets"].write(np.zeros(1, dtype="<i8").tobytes())
        self._files["tokens"].write(np.asarray(flat).astype(self.dtype, copy=False).tobytes())
        offsets = self._n_tok + np.cumsum(lengths, dtype=np.int64)
        self._files["offsets"].write(offsets.astype("<i8").tobytes())
        self._files["hashes"].write(np.asarray(keys).astype("<u8").tobytes())
        self._n_tok += int(lengths.sum())
        self._n_seq += len(lengths)

    def _flush(self) -> None:
        if not self._n_seq:
            return
        name = self._name()
        for ext, fh in self._files.items():
            fh.close()
            os.replace(self.dir / f"{name}.{ext}.tmp", self.dir / f"{name}.{ext}")
        self._files = {}
        self.shards.append({"name": name, "sequences": self._n_seq, "tokens": self._n_tok})
        self.sequences += self._n_seq
        self.tokens += self._n_tok
        self._n_tok = self._n_seq = 0

    def close(self) -> dict:
        self._flush()
        index = {
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "offsets_dtype": "<i8",
            "hashes_dtype": "<u8",
            "sequences": self.sequences,
            "tokens": self.tokens,
            "shards": self.shards,
        }
        _write_json(self.dir / INDEX_FILE, index)
        return index


def _select(flat: np.ndarray, lengths: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens and lengths of the sequences where ``mask`` is True, from a flat token array."""
    if mask.all():
        return flat, lengths
    return flat[np.repeat(mask, lengths)], lengths[mask]


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------ chunks


_ONLY_BASES = str.maketrans("", "", "ACGTN")  # deletes bases: what is left of a protein is not empty
_FIRST_STOP = re.compile(r"(?:...)*?(?:TAA|TAG|TGA)", re.S)  # codon by codon from the start up to the first stop
StopPolicy = Literal["reject", "keep"]


def has_internal_stop(seq: str) -> bool:
    """A stop codon in frame 0 before the last codon: not one coding sequence (a frame error, a readthrough, two
    genes). A stop as the last codon is the CDS's own end."""
    last = len(seq) - len(seq) % 3 - 3
    m = _FIRST_STOP.match(seq)
    return m is not None and m.end() - 3 < last


def process_chunk(
    fmt: str,
    payloads: list,
    orf: str,
    min_length: int,
    kmer: tuple[int, int] | None,
    alphabet: str = "nuc",
    internal_stops: str = "reject",
) -> tuple[list[str], list[str | None], list[int], list[bool]]:
    """Clean and validate one chunk: (sequence or raw text, reject reason or None, dedup key or 0, tail trimmed)
    per row. ``alphabet``: ``nuc`` (nucleotides), ``aa`` (amino-acid inputs) or ``translate`` (nucleotide inputs
    translated to amino acids; OAS rows are always translated for an aa tokenizer). ``kmer``: (k, stride) of a
    k-mer tokenizer; a tail that does not fill a window is cut off (the plain codon tokenizer rejects it
    instead). ``internal_stops``: a k-mer tokenizer that reads whole codons (k and stride multiples of 3) rejects
    a sequence with an in-frame stop before its last codon (``internal_stop``) unless ``keep``. A pure function
    of its arguments, so worker processes can run it."""
    seqs: list[str] = []
    reasons: list[str | None] = []
    keys: list[int] = []
    trimmed: list[bool] = []
    oas = oas_cds_batch(payloads) if fmt == "oas" else None
    codons = kmer is not None and kmer[0] % 3 == 0 and kmer[1] % 3 == 0  # the tokenizer reads whole codons
    check_stops = codons and alphabet == "nuc" and internal_stops == "reject"
    letters = "nuc" if alphabet == "nuc" else "aa"
    for j, payload in enumerate(payloads):
        if oas is not None:
            seq, reason, _ = oas[j]
            if reason:
                seq = payload.sequence_alignment
            elif alphabet != "nuc":
                seq = translate_frame(seq, 0)
        else:
            seq, reason = (clean_protein if alphabet == "aa" else clean_sequence)(payload)
            if reason is None and alphabet == "aa" and len(seq) >= 30 and not seq.translate(_ONLY_BASES):
                reason = "looks_like_nucleotides"  # no real protein is 30+ residues of only A, C, G, T
            if reason:
                seq = payload
            elif orf == "longest":
                seq, reason = longest_orf(seq)
                seq = seq if not reason else payload
            if reason is None and alphabet == "translate":
                if len(seq) % 3:
                    seq, reason = payload, "length_not_multiple_of_3"
                else:
                    seq = translate_frame(seq, 0)
        cut = False
        if reason is None:
            if len(seq) < min_length:
                reason = "too_short"
            elif kmer is not None:
                k, stride = kmer
                if len(seq) < k:
                    reason = "too_short"
                elif (len(seq) - k) % stride:
                    if k == stride == 3:
                        reason = "length_not_multiple_of_3"  # codons: not an in-frame CDS
                    else:
                        # keep the whole windows, as the HELM reference does. The key (dedup + split) is taken on
                        # the trimmed sequence, what is trained on: two rows that differ only in the dropped tail
                        # give identical tokens, so they must count as duplicates and can never straddle splits.
                        seq, cut = seq[: k + (len(seq) - k) // stride * stride], True
                if reason is None and check_stops and has_internal_stop(seq):
                    reason, cut = "internal_stop", False
            if reason is None and uninformative(seq, letters, codons):
                reason, cut = "uninformative", False  # only unknown tokens: nothing to learn or evaluate
        seqs.append(seq)
        reasons.append(reason)
        keys.append(sequence_key(seq) if reason is None else 0)
        trimmed.append(cut)
    return seqs, reasons, keys, trimmed


def _chunks(sources: list[tuple[Path, int]], fmt: str, column: str | None, size: int) -> Iterator[tuple]:
    """(file, fixed split or -1, detected format, rows, payloads) chunks over every source, in order."""
    for path, split in sources:
        f = detect_format(path) if fmt == "auto" else fmt
        rows, payloads = [], []
        for row, payload in read_records(path, f, column):
            rows.append(row)
            payloads.append(payload)
            if len(rows) == size:
                yield path, split, f, rows, payloads
                rows, payloads = [], []
        if rows:
            yield path, split, f, rows, payloads


def _stream(chunks: Iterable[tuple], threads: int, *settings: Any) -> Iterator[tuple]:
    """Yield (chunk, processed) in input order; with threads > 1 a bounded pool of worker processes.
    ``settings``: the trailing arguments of ``process_chunk`` (orf, min_length, kmer, alphabet, internal_stops)."""
    if threads <= 1:
        for ch in chunks:
            yield ch, process_chunk(ch[2], ch[4], *settings)
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(threads - 1) as pool:
        pending: deque = deque()
        for ch in chunks:
            pending.append((ch, pool.apply_async(process_chunk, (ch[2], ch[4], *settings))))
            if len(pending) >= 2 * threads:
                c, res = pending.popleft()
                yield c, res.get()
        while pending:
            c, res = pending.popleft()
            yield c, res.get()


# ------------------------------------------------------------------------------------------ corpus writer


def _tsv(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _fingerprint(settings: dict, files: list[Path]) -> str:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()]
    blob = json.dumps({"settings": settings, "files": stats, "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _up_to_date(output: Path, fingerprint: str) -> dict | None:
    try:
        summary = json.loads((output / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    # no tail_trimmed: written before k-mer tails were trimmed (6mer rows were rejected then), so redo it
    fresh = summary.get("fingerprint") == fingerprint and summary.get("complete") and "tail_trimmed" in summary
    return summary if fresh else None


def _write_trimmed(directory: Path, keys: list[np.ndarray]) -> None:
    """``tail_trimmed.hashes``: the sorted dedup keys of the kept sequences whose tail was cut (raw ``<u8``)."""
    arr = np.sort(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.uint64)
    arr.astype("<u8").tofile(directory / TRIMMED_FILE)


def _read_trimmed(directory: Path) -> np.ndarray:
    """The keys ``_write_trimmed`` wrote; none for a directory prepared before tails were trimmed (its k-mer rows
    were rejected instead, so none of its sequences lost a tail)."""
    path = directory / TRIMMED_FILE
    return np.fromfile(path, dtype="<u8").astype(np.uint64) if path.exists() else np.zeros(0, dtype=np.uint64)


def _publish(stage: Path, output: Path) -> None:
    """Replace ``output`` by the finished stage directory; refuse to delete anything that is not ours. The old
    output is renamed aside before the stage takes its name and deleted only then: a reader, a full disk or a kill
    never meets a half-deleted output (a kill between the two renames leaves no ``output``, so a rerun prepares it
    again, and the old one aside is removed by that rerun)."""
    if output.exists():
        if not (output.is_dir() and (not any(output.iterdir()) or (output / SUMMARY_FILE).exists())):
            raise DataError(output, "exists and is not a helm prepared directory; refusing to overwrite it")
        old = _replaced(output)
        os.replace(output, old)
        os.replace(stage, output)
        shutil.rmtree(old)
    else:
        os.replace(stage, output)


def _replaced(output: Path) -> Path:
    return output.with_name(f".{output.name}.replaced")


class CorpusWriter:
    """A prepared directory being written, for `prepare` and `merge` alike: the stage ``<output>.partial/`` with
    one `ShardWriter` per split, rejects.tsv, the rejected and tail-trimmed counts and tail_trimmed.hashes;
    `publish` adds the tokenizer and summary.json and renames the stage to ``<output>``. Used in a ``with``: an
    error (not a kill) removes the stage. Layout and crash safety: the module docstring, docs/ARCHITECTURE.md."""

    def __init__(
        self,
        output: Path,
        dtype: np.dtype,
        shard_tokens: int,
        long_limit: int | None = None,
        started: float | None = None,  # the run's start, for seconds and rows_per_second
    ) -> None:
        self.output, self.started = Path(output), time.time() if started is None else started
        self.stage = self.output.with_name(self.output.name + ".partial")
        for left in (self.stage, _replaced(self.output)):  # a killed earlier run's: restart cleanly (we hold the lock)
            if left.exists():
                shutil.rmtree(left)
        self.stage.mkdir(parents=True)
        self.writers = [ShardWriter(self.stage / s, dtype, shard_tokens, long_limit) for s in SPLITS]
        self.rejected: Counter = Counter()
        self.tail_trimmed = [0] * len(SPLITS)
        self.indexes: list[dict] = []
        self._trimmed_keys: list[np.ndarray] = []  # 8 bytes per kept tail-trimmed sequence
        self._rejects = open(self.stage / (REJECTS_FILE + ".tmp"), "w")
        self._rejects.write("file\trow\treason\tsequence\n")

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, error: type[BaseException] | None, value: BaseException | None, *_: Any) -> None:
        with contextlib.suppress(OSError) if error is not None else contextlib.nullcontext():
            self._rejects.close()  # its last flush fails too on a full disk
        if error is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            if isinstance(value, OSError) and value.filename is None:  # a write to an open file: name where
                raise OSError(value.errno, value.strerror, str(self.stage)) from value

    def reject(self, file: str | Path, row: int, reason: str, text: str) -> None:
        """One row that was not kept: a line of rejects.tsv, counted under its reason."""
        self._rejects.write(f"{file}\t{row}\t{reason}\t{_tsv(text)}\n")
        self.rejected[reason] += 1

    def copy_rejects(self, path: Path, counts: dict[str, int]) -> None:
        """Take over the rows of another rejects.tsv (a merged part's) and their counts per reason."""
        with open(path) as fh:
            next(fh, None)  # its header
            shutil.copyfileobj(fh, self._rejects)
        self.rejected.update(counts)

    def add(self, split: int, flat: np.ndarray, lengths: np.ndarray, keys: np.ndarray, cut: np.ndarray) -> None:
        """Append kept sequences of one split (flat tokens, lengths, dedup keys); ``cut``: which lost a tail."""
        self.writers[split].add(flat, lengths, keys)
        if cut.any():
            self.tail_trimmed[split] += int(cut.sum())
            self._trimmed_keys.append(keys[cut])

    def close(self) -> int:
        """Close the shards (each split's index.json); returns how many sequences were kept."""
        self._rejects.close()
        self.indexes = [w.close() for w in self.writers]
        return sum(ix["sequences"] for ix in self.indexes)

    def publish(self, save_tokenizer: Callable[[Path], Any], **summary: Any) -> dict:
        """Write the tokenizer and summary.json (``summary``: its fields besides the counts kept here) and make the
        stage the output; returns the summary."""
        os.replace(self.stage / (REJECTS_FILE + ".tmp"), self.stage / REJECTS_FILE)
        _write_trimmed(self.stage, self._trimmed_keys)
        save_tokenizer(self.stage)
        elapsed = time.time() - self.started
        summary = {
            "complete": True,
            **summary,
            "kept": {s: ix["sequences"] for s, ix in zip(SPLITS, self.indexes)},
            "kept_total": sum(ix["sequences"] for ix in self.indexes),
            "tail_trimmed": dict(zip(SPLITS, self.tail_trimmed)),
            "tail_trimmed_total": sum(self.tail_trimmed),
            "tokens": {s: ix["tokens"] for s, ix in zip(SPLITS, self.indexes)},
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "seconds": round(elapsed, 3),
            "rows_per_second": round(summary["rows_read"] / max(elapsed, 1e-9), 1),
        }
        _write_json(self.stage / SUMMARY_FILE, summary)
        _publish(self.stage, self.output)
        return summary


def _progress(enabled: bool):
    from tqdm import tqdm

    return tqdm(unit="rows", unit_scale=True, disable=not enabled, desc="prepare", file=sys.stderr, mininterval=1)


# ------------------------------------------------------------------------------------------ settings

TokenizerName = Literal[tuple(list_tokenizers())]


@dataclasses.dataclass
class ReadSettings:
    """Reading and cleaning."""

    fmt: Literal["auto", "txt", "csv", "fasta", "oas"] = "auto"
    """input format; auto: from the file name"""
    column: str | None = None
    """CSV column holding the sequences"""
    orf: Literal["none", "longest"] = "none"
    """longest: longest ATG ORF per record"""
    translate: bool = False
    """inputs are nucleotide CDSs (or ORFs with --orf longest): translate them (needs --tokenizer aa)"""
    min_length: int = 3
    """minimum cleaned length in nucleotides"""
    internal_stops: StopPolicy = "reject"
    """codon tokenizers: a CDS with an in-frame stop before its last codon is rejected (internal_stop, counted in
    rejects.tsv) or kept"""
    dedup: bool = True
    """reject a row whose cleaned sequence was seen before as duplicate (--no_dedup keeps them all)"""


@dataclasses.dataclass
class TokenizerSettings:
    """Tokenizer."""

    tokenizer: TokenizerName = "3mer"
    """aa: amino-acid inputs; bpe, wp, ug: learned on the training split (or --tokenizer_file)"""
    overlap: int = 0
    """k-mer window stride is k - overlap"""
    vocab_size: int = LEARNED_VOCAB_SIZE
    """learned tokenizers only"""
    tokenizer_file: str | None = None
    """reuse this tokenizer.json (or its directory)"""
    tokenizer_train_samples: int | None = None
    """training-split sequences a learned tokenizer is trained on; None: bpe and wp 50000, ug 5000"""


@dataclasses.dataclass
class WriteSettings:
    """Splitting and writing."""

    val_fraction: float = 0.05
    """share of the sequences held out for validation (a function of each sequence and --seed)"""
    test_fraction: float = 0.05
    """share of the sequences held out for testing"""
    seed: int = 42
    """seed of the split"""
    shard_tokens: int = 1 << 24
    """upper bound of tokens per shard"""
    chunk_rows: int = 4096
    """records read, cleaned and encoded at a time"""
    threads: int = 1
    """N > 1: clean chunks in N-1 worker processes (the output does not depend on N)"""
    max_seq_len: int | None = None
    """count the sequences that will be truncated at this length"""
    export_txt: str | None = None
    """also write the kept sequences, cleaned as tokenized (OAS rows cut to their in-frame CDS), one per line:
    the seed's sequences_codonized.txt"""
    force: bool = False
    """redo even if the output is up to date"""


@dataclasses.dataclass
class PrepareSettings(WriteSettings, TokenizerSettings, ReadSettings):
    """Every setting of `helm prepare` (its flags are generated from these fields) and of `prepare(...)`."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # the choices the parser checks, for library callers too
            value, choices = getattr(self, f.name), kind_of(PrepareSettings, f.name).choices
            if choices is not None and value not in choices:
                raise ConfigError(f.name, value, f"choose from {', '.join(choices)}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 0 and < 1")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("test_fraction", self.test_fraction, "val_fraction + test_fraction must be < 1")
        for name in ("threads", "shard_tokens", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be >= 1")

    def make_tokenizer(self) -> tuple[Any, str]:
        """The tokenizer (``tokenizer_file``'s or a new one) and the alphabet `process_chunk` cleans to."""
        if self.tokenizer_file:
            tok = load_tokenizer(self.tokenizer_file)
        else:
            tok = create_tokenizer(self.tokenizer, self.overlap, vocab_size=self.vocab_size)
        protein = tokenizer_alphabet(tok) == "aa"
        if self.translate and not protein:
            raise ValueError(f"translating (--translate) turns nucleotide inputs into proteins: use the aa "
                             f"tokenizer, not {tok.name}")  # fmt: skip
        if protein and self.orf != "none" and not self.translate:
            raise ValueError("--orf longest searches nucleotide inputs: with the aa tokenizer add --translate")
        return tok, "translate" if self.translate else ("aa" if protein else "nuc")

    def record(self, tok: Any, alphabet: str, sources: list[tuple[Path, int]]) -> dict:
        """The settings as summary.json keeps them and the fingerprint hashes them: a changed key or value redoes
        every prepared directory. threads, chunk_rows and force do not change the output, so they are left out."""
        samples = self.tokenizer_train_samples
        return {
            **{name: getattr(self, name) for name in _RECORDED},
            "tokenizer": tok.name if self.tokenizer_file is None else f"file:{Path(self.tokenizer_file).resolve()}",
            "alphabet": alphabet,
            "explicit_splits": sources[0][1] >= 0,
            "sources": [[str(p), s] for p, s in sources],
            "tokenizer_train_samples": TRAIN_SAMPLES.get(tok.name, 50_000) if samples is None else samples,
            "export_txt": str(Path(self.export_txt).resolve()) if self.export_txt else None,
        }


_RECORDED = ("overlap", "fmt", "column", "val_fraction", "test_fraction", "seed", "orf", "internal_stops",
             "min_length", "dedup", "max_seq_len", "shard_tokens", "vocab_size")  # fmt: skip


# ------------------------------------------------------------------------------------------ prepare


def sources_of(
    inputs: Sequence[str | Path] = (),
    train_files: Sequence[str | Path] = (),
    val_files: Sequence[str | Path] = (),
    test_files: Sequence[str | Path] = (),
) -> list[tuple[Path, int]]:
    """(file, split) in reading order: split -1 (by key) for every file, or, when val or test files are given, each
    file's own split, read test, val, train (a sequence shared with a held-out file leaves training)."""
    if val_files or test_files:
        sources = [(Path(p), 2) for p in test_files] + [(Path(p), 1) for p in val_files]
        sources += [(Path(p), 0) for p in list(train_files) + list(inputs)]
    else:
        sources = [(Path(p), -1) for p in list(inputs) + list(train_files)]
    if not sources:
        raise ValueError("no input files: pass --input (or --train_file)")
    for path, _ in sources:  # fail fast on missing files, before any work
        if not path.is_file():
            raise DataError(path, "file not found" if not path.exists() else "not a regular file")
    return sources


def _check_export(exported: Path, output: Path, sources: list[tuple[Path, int]]) -> None:
    target = exported.resolve()
    if target == output.resolve() or output.resolve() in target.parents:  # prepare replaces the whole output
        raise ValueError(f"--export_txt {exported}: must lie outside --output {output} (which prepare replaces)")
    if any(target == p.resolve() for p, _ in sources):
        raise ValueError(f"--export_txt {exported}: is one of the input files; choose another name")
    if exported.is_dir():
        raise ValueError(f"--export_txt {exported}: is a directory, not a file name")


def _move_export(staged: Path, exported: Path) -> None:
    """Out of the stage before it becomes the output, through a ``.partial`` name: a kill never leaves half a file."""
    exported.parent.mkdir(parents=True, exist_ok=True)
    partial = exported.with_name(exported.name + ".partial")
    shutil.move(staged, partial)
    os.replace(partial, exported)


def _names(sources: list[tuple[Path, int]]) -> str:
    return ", ".join(str(p) for p, _ in sources)


def _train_tokenizer(tok: Any, processed: Iterable[tuple], s: PrepareSettings, samples: int, names: str) -> None:
    """A learned tokenizer is trained on the first `samples` distinct training-split sequences (a first pass)."""
    sample, seen = [], SeenKeys()
    for (_, split, _, _, _), (seqs, reasons, keys, _) in processed:
        ok = [i for i, r in enumerate(reasons) if r is None]
        karr = np.array([keys[i] for i in ok], dtype=np.uint64)
        fresh = seen.add(karr)
        splits = np.full(len(ok), split) if split >= 0 else split_of(karr, s.seed, s.val_fraction, s.test_fraction)
        sample += [seqs[i] for i, f, sp in zip(ok, fresh, splits) if f and sp == 0]
        if len(sample) >= samples:
            break
    if not sample:
        raise DataError(names, "no training sequences to train the tokenizer on")
    tok.train(sample[:samples])


def _encode(corpus: CorpusWriter, processed: Iterable[tuple], s: PrepareSettings, tok: Any, export, bar) -> tuple:
    """The main pass: deduplicate, reject, split and encode every processed chunk into `corpus` (and `export`);
    returns the rows read and the counts per file."""
    seen, per_file, rows_read = SeenKeys(), {}, 0
    for (path, split, _, rows, _), (seqs, reasons, keys, trimmed) in processed:
        counts = per_file.setdefault(str(path), Counter())
        karr = np.array(keys, dtype=np.uint64)
        ok = np.array([r is None for r in reasons], dtype=bool)
        if s.dedup:
            fresh = np.zeros(len(rows), dtype=bool)
            fresh[ok] = seen.add(karr[ok])
            for i in np.nonzero(ok & ~fresh)[0]:
                reasons[i] = "duplicate"
            ok &= fresh
        for i in np.nonzero(~ok)[0]:
            corpus.reject(path, rows[i], reasons[i], seqs[i])
            counts["rejected"] += 1
        idx = np.nonzero(ok)[0]
        counts["read"] += len(rows)
        counts["kept"] += len(idx)
        rows_read += len(rows)
        if export is not None:
            export.writelines(seqs[i] + "\n" for i in idx)
        if len(idx):
            kept_keys = karr[idx]
            flat, bounds = tok.encode_flat([seqs[i] for i in idx])
            lengths = np.diff(bounds)
            if split >= 0:
                splits = np.full(len(idx), split, dtype=np.int8)
            else:
                splits = split_of(kept_keys, s.seed, s.val_fraction, s.test_fraction)
            cut = np.array([trimmed[i] for i in idx], dtype=bool)
            for j in range(len(SPLITS)):
                sel = splits == j
                corpus.add(j, *_select(flat, lengths, sel), kept_keys[sel], cut[sel])
        bar.update(len(rows))
    return rows_read, per_file


def _nothing_left(names: str, rejected: Counter, rows_read: int) -> DataError:
    detail = ", ".join(f"{r}: {n}" for r, n in rejected.most_common()) or "no rows"
    hint = "; nucleotide inputs need --translate" if "looks_like_nucleotides" in rejected else ""
    return DataError(names, f"no sequences left after filtering ({rows_read} rows read; rejected {detail}){hint}")


def prepare_files(
    s: PrepareSettings, sources: list[tuple[Path, int]], output: str | Path, progress: bool = True
) -> dict:
    """Prepare `sources` (from `sources_of`) into ``output`` under settings `s`; returns the summary dict.
    Raises ``DataError`` for whole-file problems and for an empty corpus after filtering."""
    t0, output = time.time(), Path(output)
    with exclusive(output, "helm prepare"):  # a second prepare on this output is refused, never let to clash
        return _prepare_files(s, sources, output, progress, t0)


def _prepare_files(
    s: PrepareSettings, sources: list[tuple[Path, int]], output: Path, progress: bool, t0: float
) -> dict:
    fingerprint, record, tok, alphabet = _fingerprint_of(s, sources)
    exported = Path(s.export_txt) if s.export_txt else None
    if exported is not None:
        _check_export(exported, output, sources)
    if not s.force and (exported is None or exported.is_file()) and (done := _up_to_date(output, fingerprint)):
        print(f"helm prepare: {output} is up to date (fingerprint {fingerprint})", file=sys.stderr)
        return done
    kmer = (tok.k, tok.stride) if hasattr(tok, "stride") else None

    def processed() -> Iterator[tuple]:
        chunks = _chunks(sources, s.fmt, s.column, s.chunk_rows)
        return _stream(chunks, s.threads, s.orf, s.min_length, kmer, alphabet, s.internal_stops)

    if getattr(tok, "vocab", None) is None:  # a learned tokenizer, not trained yet
        _train_tokenizer(tok, processed(), s, record["tokenizer_train_samples"], _names(sources))
    long_limit = s.max_seq_len - 2 if s.max_seq_len else None  # room for the special tokens around a sequence
    with CorpusWriter(output, tok.dtype, s.shard_tokens, long_limit, started=t0) as corpus:
        staged = corpus.stage / EXPORT_TMP
        with _progress(progress) as bar, open(staged, "w") if exported else contextlib.nullcontext() as export:
            rows_read, per_file = _encode(corpus, processed(), s, tok, export, bar)
        if corpus.close() == 0:
            raise _nothing_left(_names(sources), corpus.rejected, rows_read)
        extra: dict[str, Any] = {}
        if s.max_seq_len:
            extra["longer_than_max_seq_len"] = {split: w.longer for split, w in zip(SPLITS, corpus.writers)}
        if exported is not None:
            _move_export(staged, exported)
            extra["exported"] = str(exported)
        return corpus.publish(
            tok.save,
            fingerprint=fingerprint,
            settings=record,
            tokenizer=tok.name,
            vocab_size=len(tok),
            rows_read=rows_read,
            per_file={f: dict(c) for f, c in per_file.items()},
            **extra,
        )


def _fingerprint_of(s: PrepareSettings, sources: list[tuple[Path, int]]) -> tuple[str, dict, Any, str]:
    """(the fingerprint a directory prepared from `sources` under `s` carries, the settings record behind it, the
    tokenizer, the alphabet)."""
    tok, alphabet = s.make_tokenizer()
    record = s.record(tok, alphabet, sources)
    files = [p for p, _ in sources] + ([Path(s.tokenizer_file)] if s.tokenizer_file else [])
    return _fingerprint(record, files), record, tok, alphabet


def is_prepared(
    output: str | Path,
    inputs: Sequence[str | Path] = (),
    *,
    train_files: Sequence[str | Path] = (),
    val_files: Sequence[str | Path] = (),
    test_files: Sequence[str | Path] = (),
    **settings: Any,
) -> bool:
    """Whether ``output`` is complete and prepared from exactly these files and settings (what `prepare` would
    skip): a stale directory from other files or settings is not."""
    sources = sources_of(inputs, train_files, val_files, test_files)
    return _up_to_date(Path(output), _fingerprint_of(PrepareSettings(**settings), sources)[0]) is not None


def prepare(
    inputs: Sequence[str | Path] = (),
    output: str | Path = "prepared",
    *,
    train_files: Sequence[str | Path] = (),
    val_files: Sequence[str | Path] = (),
    test_files: Sequence[str | Path] = (),
    progress: bool = True,
    **settings: Any,
) -> dict:
    """Prepare ``inputs`` (or explicit train/val/test files) into ``output``; returns the summary dict.
    ``settings``: fields of `PrepareSettings` (``tokenizer="6mer"``, ``val_fraction=0``, ``export_txt=...``).
    Raises ``DataError`` for whole-file problems and for an empty corpus after filtering, `ConfigError` for a bad
    setting."""
    s = PrepareSettings(**settings)
    return prepare_files(s, sources_of(inputs, train_files, val_files, test_files), output, progress)


def format_summary(output: str | Path, summary: dict) -> str:
    kept = summary["kept"]
    rej = ", ".join(f"{r}: {n}" for r, n in sorted(summary["rejected"].items(), key=lambda x: -x[1])) or "none"
    return (
        f"helm prepare: {output}: kept {summary['kept_total']} (train {kept['train']} / val {kept['val']} / "
        f"test {kept['test']}; tail_trimmed {summary['tail_trimmed_total']}), "
        f"rejected {summary['rejected_total']} ({rej}) of {summary['rows_read']} rows "
        f"in {summary['seconds']:.1f} s ({summary['rows_per_second']:.0f} rows/s)"
        + (f"; sequences written to {summary['exported']}" if summary.get("exported") else "")
    )


# ------------------------------------------------------------------------------------------ merge


def _read_parts(parts: list[Path]) -> list[dict]:
    """The parts' summaries, once each part is known to be finished and all share one tokenizer and split."""
    if not parts:
        raise ValueError("--merge needs at least one prepared directory")
    summaries = []
    for part in parts:
        try:
            summary = json.loads((part / SUMMARY_FILE).read_text())
        except (OSError, ValueError) as err:
            raise DataError(part, f"not a finished prepared directory ({SUMMARY_FILE} unreadable: {err})") from err
        if not summary.get("complete"):
            raise DataError(part, "prepared directory is not complete")
        summaries.append(summary)
    tok_bytes = (parts[0] / TOKENIZER_FILE).read_bytes()
    keys = ("val_fraction", "test_fraction", "seed", "explicit_splits")
    for part, summary in zip(parts[1:], summaries[1:]):
        if (part / TOKENIZER_FILE).read_bytes() != tok_bytes:
            raise DataError(part, f"tokenizer differs from {parts[0]}'s; parts must share one tokenizer")
        if any(summary["settings"].get(k) != summaries[0]["settings"].get(k) for k in keys):
            raise DataError(part, f"split settings ({', '.join(keys)}) differ from {parts[0]}'s")
    return summaries


def _merge_splits(corpus: CorpusWriter, parts: list[Path], tok: Any, bar) -> None:
    """Every part's splits into `corpus`, in part order; a sequence an earlier part holds is a duplicate."""
    from helm.shards import TokenShards

    # a part's trimmed sequence may be dropped here as a cross-part duplicate: count the kept ones, per part
    trimmed = [_read_trimmed(part) for part in parts]
    for j, split in enumerate(SPLITS):
        seen = SeenKeys()  # a sequence's split is fixed, so dedup per split is global dedup
        for part, part_trimmed in zip(parts, trimmed):
            for lo, flat, lengths, keys in TokenShards(part / split).blocks():
                fresh = seen.add(keys)
                ends = np.cumsum(lengths)
                for i in np.nonzero(~fresh)[0]:
                    seq = tok.decode(flat[ends[i] - lengths[i] : ends[i]])
                    corpus.reject(f"{part}/{split}", lo + i + 1, "duplicate", seq)
                kept = keys[fresh]
                corpus.add(j, *_select(flat, lengths, fresh), kept, np.isin(kept, part_trimmed))
                bar.update(len(lengths))


def merge(
    parts: Sequence[str | Path],
    output: str | Path,
    shard_tokens: int = WriteSettings.shard_tokens,
    progress: bool = True,
) -> dict:
    """Merge prepared directories (fan-out parts) into one; see the module docstring."""
    t0 = time.time()
    parts = sorted(Path(p) for p in parts)
    output = Path(output)
    summaries = _read_parts(parts)
    tok = load_tokenizer(parts[0])
    fingerprint = _fingerprint(
        {"merge": [str(p.resolve()) for p in parts], "shard_tokens": shard_tokens}, [p / SUMMARY_FILE for p in parts]
    )
    with exclusive(output, "helm prepare --merge"):
        return _merge(parts, summaries, tok, fingerprint, output, shard_tokens, progress, t0)


def _merge(parts: list[Path], summaries: list[dict], tok: Any, fingerprint: str, output: Path, shard_tokens: int,
           progress: bool, t0: float) -> dict:  # fmt: skip
    if done := _up_to_date(output, fingerprint):
        return done
    with CorpusWriter(output, tok.dtype, shard_tokens, started=t0) as corpus:
        for part, summary in zip(parts, summaries):
            corpus.copy_rejects(part / REJECTS_FILE, summary["rejected"])
        with _progress(progress) as bar:
            _merge_splits(corpus, parts, tok, bar)
        corpus.close()
        tok_bytes = (parts[0] / TOKENIZER_FILE).read_bytes()
        first = summaries[0]
        return corpus.publish(
            lambda stage: (stage / TOKENIZER_FILE).write_bytes(tok_bytes),
            fingerprint=fingerprint,
            settings={**first["settings"], "merged_parts": [str(p) for p in parts], "shard_tokens": shard_tokens},
            tokenizer=first["tokenizer"],
            vocab_size=first["vocab_size"],
            rows_read=sum(s["rows_read"] for s in summaries),
            per_file={name: counts for s in summaries for name, counts in s["per_file"].items()},
        )


# ------------------------------------------------------------------------------------------ CLI


def build_parser() -> HelmParser:
    """Every flag in both spellings (``--a_b``, ``--a-b``); the settings' flags come from `PrepareSettings`."""
    p = HelmParser(prog="helm prepare", description=__doc__.split("\n\n")[0])
    files = p.add_argument_group("Files")
    files.add_argument("--input", "--inputs", "--data", dest="inputs", nargs="+", default=[], metavar="FILE",
                       help="sequence files (txt, csv, fasta, OAS .csv.gz)")  # fmt: skip
    files.add_argument("--data_dir", default=None, help="directory the file names are relative to")
    for split in SPLITS:
        files.add_argument(f"--{split}_file", dest=f"{split}_files", nargs="+", default=[], metavar="FILE",
                           help=f"the {split} split, as is (instead of a split of --input)")  # fmt: skip
    files.add_argument("--output", "--out", "-o", required=True, default=argparse.SUPPRESS, help="prepared directory")
    files.add_argument("--merge", nargs="+", default=None, metavar="PART", help="merge prepared directories")
    files.add_argument("--no_progress", action="store_true", help="no progress bar")
    # the flags `helm prepare` has always had for these fields (--no_dedup is the --dedup switch's negation)
    add_dataclass(p, ReadSettings, aliases={"fmt": ("--format", "--file_extension"), "column": ("--column_name",)})
    add_dataclass(p, TokenizerSettings)
    add_dataclass(p, WriteSettings)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with command_errors("helm prepare"):
        settings = from_values(PrepareSettings, vars(args))
        if args.merge:
            summary = merge(args.merge, args.output, shard_tokens=settings.shard_tokens, progress=not args.no_progress)
        else:
            files = [
                [str(Path(args.data_dir) / f) if args.data_dir else f for f in getattr(args, name)]
                for name in ("inputs", "train_files", "val_files", "test_files")
            ]
            summary = prepare_files(settings, sources_of(*files), args.output, progress=not args.no_progress)
    print(format_summary(args.output, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
