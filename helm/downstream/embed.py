"""Turning sequences into model inputs and frozen embeddings (batched, pads masked).

Framing follows pretraining (docs/ARCHITECTURE.md): ``<cls> t1..tn <eos>`` for MLM runs, ``<cls> t1..tn`` for
CLM runs. Sequences longer than the model's ``max_seq_len`` are truncated (the tail is cut) and *counted*:
``Encoded.n_truncated`` goes into every output JSON and a warning is printed; ``overlong='error'`` refuses
instead. A codon tokenizer reads from ``codon_frame`` and drops bases past the last whole codon (counted in
``n_tail_trimmed``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from helm.codons import CLS_ID, EOS_ID, PAD_ID
from helm.downstream.common import InputError  # defined with the commands' helpers (no torch), used here too
from helm.tokenizers import tokenizer_alphabet


@dataclass
class Encoded:
    ids: torch.Tensor  # Long [N, L]
    mask: torch.Tensor  # Bool [N, L], True = real token
    n_truncated: int = 0
    n_tail_trimmed: int = 0

    def __len__(self) -> int:
        return self.ids.shape[0]

    def subset(self, index: np.ndarray | torch.Tensor) -> Encoded:
        index = torch.as_tensor(index, dtype=torch.long)
        ids, mask = self.ids[index], self.mask[index]
        width = max(int(mask.sum(1).max()), 1) if len(index) else 1
        return Encoded(ids[:, :width], mask[:, :width], self.n_truncated, self.n_tail_trimmed)


def check_alphabet(tokenizer, alphabet: str, where: str) -> None:
    """Sequences and tokenizer must speak the same alphabet: an amino-acid run (``--data-type aa``) would read
    A/C/G/T as Ala/Cys/Gly/Thr, a nucleotide run would read proteins as bases; both give meaningless
    embeddings, so either is refused up front. ``alphabet``: ``nuc`` or ``aa``."""
    reads_aa = tokenizer_alphabet(tokenizer) == "aa"
    if reads_aa and alphabet != "aa":
        raise InputError(
            f"{where}: this run reads amino acids (tokenizer 'aa', --data-type aa) but these are nucleotide "
            "sequences; use a nucleotide or codon run"
        )
    if alphabet == "aa" and not reads_aa:
        raise InputError(f"{where}: these are protein sequences but the run reads nucleotides; use an aa run")


def encode(
    tokenizer,
    sequences: list[str],
    max_len: int,
    *,
    mode: str = "mlm",
    codon_frame: int = 0,
    overlong: str = "truncate",
    where: str = "sequences",
    alphabet: str = "nuc",
) -> Encoded:
    """Tokenize, frame and pad ``sequences`` (cleaned DNA, or proteins with ``alphabet='aa'``) into at most
    ``max_len`` tokens each."""
    if overlong not in ("truncate", "error"):
        raise ValueError(f"overlong must be 'truncate' or 'error', got {overlong!r}")
    check_alphabet(tokenizer, alphabet, where)
    k = getattr(tokenizer, "k", 1)
    kmer = getattr(tokenizer, "vocab", None) is not None and tokenizer.vocab.kind in ("codon", "kmer")
    seqs = [s[codon_frame:] for s in sequences] if kmer else list(sequences)
    n_tail = sum(1 for s in seqs if len(s) % k) if kmer and k > 1 else 0
    tokens = tokenizer.encode_batch(seqs)
    specials = 2 if mode == "mlm" else 1
    room = max_len - specials
    if room < 1:
        raise InputError(f"max_len={max_len} leaves no room for tokens after {specials} special token(s)")
    lengths = np.array([len(t) for t in tokens])
    too_long = np.nonzero(lengths > room)[0]
    if len(too_long):
        if overlong == "error":
            raise InputError(
                f"{where}: {len(too_long)} sequence(s) exceed the model's {max_len} tokens (first: row {too_long[0]}, "
                f"{lengths[too_long[0]]} tokens + {specials} specials); use --overlong truncate to cut them"
            )
        print(
            f"warning: {where}: {len(too_long)} of {len(tokens)} sequence(s) longer than {room} tokens were "
            f"truncated to the model's max_seq_len={max_len}",
            file=sys.stderr,
        )
    empty = np.nonzero(lengths == 0)[0]
    if len(empty):
        raise InputError(f"{where}: row {empty[0]} has no tokens (shorter than one token of {k} bases)")
    n = np.minimum(lengths, room)
    width = int(n.max()) + specials
    ids = np.full((len(tokens), width), PAD_ID, dtype=np.int64)
    ids[:, 0] = CLS_ID
    for i, t in enumerate(tokens):  # one numpy copy per row; tokenization itself is vectorized
        ids[i, 1 : 1 + n[i]] = t[: n[i]]
    if mode == "mlm":
        ids[np.arange(len(tokens)), 1 + n] = EOS_ID
    mask = np.arange(width)[None, :] < (n + specials)[:, None]
    return Encoded(torch.from_numpy(ids), torch.from_numpy(mask), len(too_long), n_tail)


def check_compatible(model, tokenizer, where: str = "checkpoint") -> None:
    """A tokenizer whose vocabulary does not match the model's embedding table is a hard error."""
    v_model = int(model.config.vocab_size)
    v_tok = len(tokenizer)
    if v_model != v_tok:
        raise InputError(
            f"{where}: checkpoint/tokenizer mismatch: the model has vocab_size={v_model} but the tokenizer "
            f"{getattr(tokenizer, 'name', '?')!r} has {v_tok} tokens"
        )


def run_mode(config: dict) -> str:
    mode = str(config.get("mode", "mlm")).lower()
    return "clm" if mode == "clm" and not config.get("bidirectional") else "mlm"


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast for the backbone's matmuls (AMX/AVX512-BF16 CPUs and GPUs run it much faster)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.inference_mode()
def embed_tokens(
    model,
    enc: Encoded,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    bf16: bool = False,
    compile: bool = False,
) -> torch.Tensor:
    """Per-token embeddings [N, L, H] (pads zeroed) in the input order.

    Rows are sorted by length so every batch is padded only to its own longest row. ``bf16`` runs the
    backbone under bfloat16 autocast (about 3 significant digits; fine for probing, off by default).
    ``compile`` runs ``model.embed`` through ``torch.compile`` (dynamic shapes: one compile for every width).
    """
    out = torch.zeros(len(enc), enc.ids.shape[1], model.config.hidden_size, dtype=dtype)
    for rows, hidden, mask in _length_sorted_batches(model, enc, batch_size, progress, bf16, compile):
        out[rows, : mask.shape[1]] = (hidden * mask.unsqueeze(-1)).to(dtype).cpu()
    return out


def _length_sorted_batches(model, enc: Encoded, batch_size: int, progress: bool, bf16: bool, compile: bool = False):
    """(rows, hidden [b, w, H], mask [b, w]) per batch of rows sorted by length, each padded only to its own
    longest row (w)."""
    model.eval()
    embed = torch.compile(model.embed, dynamic=True) if compile else model.embed
    device = next(model.parameters()).device
    lengths = enc.mask.sum(1)
    order = torch.argsort(lengths, descending=True)
    batches = range(0, len(enc), batch_size)
    for start in tqdm(batches, desc="embed", disable=not progress or len(batches) < 4, leave=False):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        ids, mask = enc.ids[rows, :width].to(device), enc.mask[rows, :width].to(device)
        with _autocast(device, bf16):
            hidden = embed(ids, mask)
        yield rows, hidden, mask


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: [N, L, H] -> [N, H]."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


@torch.inference_mode()
def embed_pooled(model, enc: Encoded, batch_size: int = 64, progress: bool = True, bf16: bool = False) -> torch.Tensor:
    """Mean-pooled sequence embeddings [N, H] without materializing every token (for generation/clustering)."""
    out = torch.zeros(len(enc), model.config.hidden_size)
    for rows, hidden, mask in _length_sorted_batches(model, enc, batch_size, progress, bf16):
        out[rows] = mean_pool(hidden.float(), mask).cpu()
    return out
