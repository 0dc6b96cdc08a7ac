"""Where a downstream command's model comes from: one of our runs (``--run``) or any local Hugging Face
checkpoint (``--hf DIR``), behind one interface, so both go through the same datasets, splits, heads and seeds.

``--hf DIR`` loads ``AutoTokenizer.from_pretrained(DIR)`` and ``AutoModel.from_pretrained(DIR)`` (local files only;
``--trust-remote-code`` for checkpoints that ship their own code). Per-token features = the hidden states of the
model's last layer (``last_hidden_state``). Conventions (docs/PROTOCOL.md "Foreign checkpoints"):

- text: the cleaned DNA of the dataset, U for T with ``--hf-alphabet rna``; ``--hf-words base|codon`` writes it as
  bases or codons (from the dataset's ``codon_frame``, a partial last codon dropped and counted) joined by
  ``--hf-sep`` (default one space), for tokenizers that expect spaced words; ``none`` (default) passes one string.
- specials come from the tokenizer (``add_special_tokens=True``); the feature mask is its attention mask: pads
  out, specials in, exactly like our own runs (``<cls> t1..tn <eos>``: ``helm.downstream.embed.encode``), so the
  same model gives the same features and pooled means whether it is loaded as a run or as an HF export.
- length: the smaller of ``config.max_position_embeddings`` and ``tokenizer.model_max_length`` (when set),
  capped by ``--max-len``; longer rows are cut by the tokenizer (specials kept) and counted in ``n_truncated``.
- identity: run id ``hf:<name>`` (``--hf-name``, default the folder's name, or the model name of a hub-cache
  snapshot); ``hf`` in the JSON / features metadata holds the path and the sha256 of its config.json.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from helm.downstream.common import InputError

if TYPE_CHECKING:  # torch, numpy and transformers load only when a model does (`helm <command> --help` is instant)
    import numpy as np
    from torch import nn

    from helm.downstream.embed import Encoded

HF_FLAGS = ("hf_name", "trust_remote_code", "hf_alphabet", "hf_words", "hf_sep")
SANE_MAX_LEN = 1_000_000  # tokenizers without a limit report int(1e30)


@dataclass
class Source:
    """A loaded model ready to embed: ``model.embed(ids, mask) -> [B, L, H]`` and ``model.config.hidden_size``."""

    run_id: str
    run_dir: str
    model: nn.Module
    max_len: int | None  # the most tokens the model takes (specials included); None = no known limit
    meta: dict[str, Any]  # mode, tokenizer, hf: what the output JSON / features metadata record
    _encode: Callable[..., Encoded] = field(repr=False)

    def resolve_max_len(self, requested: int | None) -> int:
        """``--max-len`` capped by the model's own limit (native: max_seq_len; HF: max positions)."""
        if self.max_len is None and not requested:
            raise InputError(f"--hf {self.run_dir}: the checkpoint states no length limit (neither config."
                             "max_position_embeddings nor tokenizer.model_max_length); pass --max-len")  # fmt: skip
        return min(int(requested or self.max_len), int(self.max_len or requested))

    def encode(self, sequences: list[str], max_len: int, *, codon_frame: int = 0, overlong: str = "truncate",
               where: str = "sequences") -> Encoded:  # fmt: skip
        return self._encode(sequences, max_len, codon_frame=codon_frame, overlong=overlong, where=where)


def source_error(args: argparse.Namespace) -> str | None:
    """A one-line usage error (exit 2) for the source flags, or None: exactly one source, --hf options only with
    --hf, and --hf naming a Hugging Face folder."""
    names = ["--run", "--hf"] + (["--features"] if hasattr(args, "features") else [])
    given = [n for n in names if getattr(args, n[2:])]
    if len(given) != 1:
        return f"give exactly one of {', '.join(names)} (got {' and '.join(given) if given else 'none'})"
    hf_only = [f"--{k.replace('_', '-')}" for k in HF_FLAGS if getattr(args, k, None) is not None]
    if hf_only and not args.hf:
        return f"{', '.join(hf_only)} only apply to --hf"
    if args.hf:
        path = Path(args.hf)
        if not path.is_dir():
            return f"--hf {path}: no such directory"
        if not (path / "config.json").is_file():
            return f"--hf {path}: not a Hugging Face model folder (no config.json)"
        if args.hf_sep is not None and (args.hf_words or "none") == "none":
            return "--hf-sep needs --hf-words base or codon"
    return None


def load_source(args: argparse.Namespace) -> Source:
    """The model named by ``--run`` or ``--hf`` (flags already checked by `source_error`)."""
    if getattr(args, "hf", None):
        sep = " " if args.hf_sep is None else args.hf_sep
        return load_hf(args.hf, name=args.hf_name, trust_remote_code=bool(args.trust_remote_code),
                       alphabet=args.hf_alphabet or "dna", words=args.hf_words or "none", sep=sep,
                       quiet=getattr(args, "quiet", False))  # fmt: skip
    return load_native(args.run)


def load_native(run_dir: str | Path) -> Source:
    from helm.downstream.embed import check_compatible, encode, run_mode
    from helm.run import load_run

    run = load_run(run_dir)
    check_compatible(run.model, run.tokenizer, where=str(run_dir))
    mode = run_mode(run.config)

    def encoder(sequences, max_len, **kw) -> Encoded:
        return encode(run.tokenizer, sequences, max_len, mode=mode, **kw)

    meta = {"mode": mode, "tokenizer": getattr(run.tokenizer, "name", None), "hf": None}
    return Source(run.run_id, str(run_dir), run.model, int(run.model.config.max_seq_len), meta, encoder)


@functools.cache
def _hf_encoder_class() -> type:
    from torch import nn

    class HFEncoder(nn.Module):
        """A transformers model behind our backbones' ``embed(ids, mask)``: the last layer's hidden states."""

        def __init__(self, model: nn.Module, hidden_size: int, max_seq_len: int | None) -> None:
            super().__init__()
            self.hf = model
            self.config = SimpleNamespace(hidden_size=hidden_size, max_seq_len=max_seq_len)

        def embed(self, input_ids, attention_mask=None, position_ids=None):
            mask = None if attention_mask is None else attention_mask.long()
            out = self.hf(input_ids=input_ids, attention_mask=mask)
            return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    return HFEncoder


def hf_encoder(model: nn.Module, hidden_size: int, max_seq_len: int | None) -> nn.Module:
    """``HFEncoder(model, hidden_size, max_seq_len)``: the class is made on first use (it needs torch)."""
    return _hf_encoder_class()(model, hidden_size, max_seq_len)


def checkpoint_name(path: str | Path) -> str:
    """The name a Hugging Face checkpoint (``--hf``, an ESM embedder) goes by in run ids and metric names: its
    directory name, or for a hub cache snapshot (``models--facebook--esm2_t12_35M_UR50D/snapshots/<commit>``) the
    model's name."""
    path = Path(path).resolve()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name


def hf_max_len(config: Any, tokenizer: Any) -> tuple[int | None, str | None]:
    """(limit, where it comes from): the smaller of config.max_position_embeddings and a set model_max_length."""
    found = {"config.max_position_embeddings": getattr(config, "max_position_embeddings", None),
             "tokenizer.model_max_length": getattr(tokenizer, "model_max_length", None)}  # fmt: skip
    sane = {k: int(v) for k, v in found.items() if isinstance(v, int) and 0 < v < SANE_MAX_LEN}
    if not sane:
        return None, None
    key = min(sane, key=sane.get)
    return sane[key], key


def hf_texts(sequences: list[str], alphabet: str, words: str, sep: str, codon_frame: int) -> tuple[list[str], int]:
    """(texts for the tokenizer, rows that lost a partial last codon): see the module docstring."""
    n_tail = 0
    if words == "codon":
        seqs = [s[codon_frame:] for s in sequences]
        n_tail = sum(1 for s in seqs if len(s) % 3)
        texts = [sep.join(s[i : i + 3] for i in range(0, len(s) - 2, 3)) for s in seqs]
    elif words == "base":
        texts = [sep.join(s) for s in sequences]
    else:
        texts = list(sequences)
    if alphabet == "rna":
        texts = [t.replace("T", "U") for t in texts]
    return texts, n_tail


def encode_hf(tokenizer, texts: list[str], max_len: int, overlong: str = "truncate",
              where: str = "sequences") -> tuple[Encoded, np.ndarray]:  # fmt: skip
    """Tokenize with the checkpoint's own specials, cut rows longer than ``max_len`` (counted), pad on the right.
    Returns the encoding (mask = attention mask: specials in, pads out) and the special-token mask."""
    import numpy as np
    import torch

    from helm.downstream.embed import Encoded

    kw = {"add_special_tokens": True, "return_special_tokens_mask": True, "return_attention_mask": True,
          "verbose": False}  # fmt: skip
    full = tokenizer(texts, **kw)
    ids, special = list(full["input_ids"]), list(full["special_tokens_mask"])
    attn = list(full["attention_mask"])
    too_long = [i for i, row in enumerate(ids) if len(row) > max_len]
    if too_long:
        first = too_long[0]
        if overlong == "error":
            raise InputError(f"{where}: {len(too_long)} sequence(s) exceed the model's {max_len} tokens (first: "
                             f"row {first}, {len(ids[first])} tokens with specials); use --overlong truncate to cut "
                             "them")  # fmt: skip
        cut = tokenizer([texts[i] for i in too_long], truncation=True, max_length=max_len, **kw)
        for j, i in enumerate(too_long):
            ids[i], special[i], attn[i] = cut["input_ids"][j], cut["special_tokens_mask"][j], cut["attention_mask"][j]
        if max(len(ids[i]) for i in too_long) > max_len:
            raise InputError(f"{where}: the tokenizer did not cut row {first} to {max_len} tokens")
        print(f"warning: {where}: {len(too_long)} of {len(ids)} sequence(s) longer than {max_len} tokens (specials "
              f"included) were truncated to the model's limit", file=sys.stderr)  # fmt: skip
    content = [sum(1 for s in row if not s) for row in special]
    if min(content, default=1) == 0:
        raise InputError(f"{where}: row {content.index(0)} has no tokens besides the tokenizer's special tokens")
    width = max(len(row) for row in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out either way
    out = np.full((len(ids), width), pad, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=bool)
    spec = np.zeros((len(ids), width), dtype=bool)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
        mask[i, : len(row)] = np.asarray(attn[i], dtype=bool)
        spec[i, : len(row)] = np.asarray(special[i], dtype=bool)
    return Encoded(torch.from_numpy(out), torch.from_numpy(mask), len(too_long), 0), spec


def load_hf(path: str | Path, name: str | None = None, trust_remote_code: bool = False, alphabet: str = "dna",
            words: str = "none", sep: str = " ", quiet: bool = False) -> Source:  # fmt: skip
    import transformers
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    kw = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kw)
    except Exception as exc:  # transformers raises many kinds; the first line says which
        raise InputError(f"--hf {path}: cannot load the tokenizer ({_first_line(exc)})") from None
    try:
        model, info = AutoModel.from_pretrained(str(path), output_loading_info=True, **kw)
    except Exception as exc:
        custom = "custom code" in str(exc) and not trust_remote_code
        hint = "; pass --trust-remote-code if you trust it" if custom else ""
        raise InputError(f"--hf {path}: cannot load the model ({_first_line(exc)}){hint}") from None
    # weights the folder lacks are randomly initialised by transformers: say so (the pooler is never used here)
    missing = sorted(k for k in (info.get("missing_keys") or ()) if "pooler" not in k)
    if missing:
        print(f"warning: --hf {path}: {len(missing)} weight(s) missing from the checkpoint were randomly initialised "
              f"(first: {missing[0]}); features are partly random", file=sys.stderr)  # fmt: skip
    model = model.float().eval()  # float32 like our runs (transformers 5 keeps a checkpoint's saved dtype)
    limit, limit_from = hf_max_len(model.config, tokenizer)
    hidden = getattr(model.config, "hidden_size", None) or model.get_input_embeddings().embedding_dim
    config_bytes = (path / "config.json").read_bytes()
    name = name or checkpoint_name(path)
    hf = {"path": str(path.resolve()), "name": name, "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
          "model_type": getattr(model.config, "model_type", None), "model_class": type(model).__name__,
          "tokenizer_class": type(tokenizer).__name__, "trust_remote_code": trust_remote_code, "alphabet": alphabet,
          "words": words, "sep": sep if words != "none" else None, "features": "last_hidden_state",
          "mask": "attention_mask (specials kept, pads out)", "max_positions": limit,
          "max_positions_from": limit_from, "missing_weights": len(missing)}  # fmt: skip

    def encoder(sequences, max_len, *, codon_frame=0, overlong="truncate", where="sequences") -> Encoded:
        texts, n_tail = hf_texts(sequences, alphabet, words, sep, codon_frame)
        enc, _ = encode_hf(tokenizer, texts, max_len, overlong=overlong, where=where)
        enc.n_tail_trimmed = n_tail
        return enc

    meta = {"mode": None, "tokenizer": f"hf:{type(tokenizer).__name__}", "hf": hf}
    return Source(f"hf:{name}", str(path), hf_encoder(model, int(hidden), limit), limit, meta, encoder)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
