"""`helm generate`: sample sequences from a CLM run and score them against held-out data.

    helm generate --run RUN_DIR --out FILE.json --num-samples 64 --reference PREPARED_DIR_or_FILE \
        [--prompt none|codons|cdr3] [--prompt-codons 30] [--temperature 1.0] [--top-k 10] [--top-p 0.95]
        [--max-new-tokens N] [--num-reference 200] [--embed-run RUN_DIR | --esm HF_ESM_DIR] [--pca-components 4]
        [--pca-fit reference|both] [--seed 0]

Sampling: temperature, then top-k, then top-p (nucleus) filtering; only sequence tokens and ``<eos>`` can be
drawn. Prompts: none (from ``<cls>`` only), the first ``--prompt-codons`` tokens of reference sequences, or
(OAS CSV references) the reference cut just before its CDR3 -- the paper's "before the D-J region".
Metrics: in-frame fraction (length a multiple of 3, no internal stop: what every OAS V(D)J fragment is),
valid-ORF fraction (the same plus an ATG start), GC content, internal diversity (mean pairwise Levenshtein),
each with the reference set's own value beside it (``ref_<metric>``); codon-usage distance; and a Fréchet
distance + neighbour precision/recall between mean-pooled embeddings of generated and held-out sequences.
Embedding-based metric names carry their embedder (``frechet_distance@esm:<checkpoint>``,
``frechet_distance@run:<run id>``), so values from different embedding spaces never share a name. The embedder
is the run's own encoder by default (nucleotide space); the paper's protocol embeds the translated proteins
(codons up to the first stop) with ESM-2: ``--esm DIR`` takes any local Hugging Face ESM checkpoint, and
``--embed-run`` an ``aa`` run (``--data-type aa``) is an offline protein embedder (the workflow gives every
generate job the same one: docs/ARCHITECTURE.md, "Workflow").
Samples are written as FASTA next to the JSON (``--samples`` to choose).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from helm.args import HelmParser
from helm.downstream.command import (
    EvalRecord,
    FromRun,
    Output,
    Reference,
    recorded,
    run_command,
    settings_parser,
)
from helm.downstream.common import InputError
from helm.downstream.source import checkpoint_name

if TYPE_CHECKING:  # torch, numpy and scipy load when a command runs (`helm generate --help` is instant)
    import numpy as np
    import torch


@dataclass
class GenerateSettings(FromRun, Output, Reference):
    """Sampling and scoring."""

    run: str | None = None
    """CLM run directory"""
    num_samples: int = 64
    """sequences to sample"""
    num_reference: int = 200
    """held-out sequences read"""
    prompt: Literal["none", "codons", "cdr3"] = "none"
    """none: from <cls>; codons: a reference's first codons; cdr3: an OAS reference up to its CDR3"""
    prompt_codons: int = 30
    """prompt length for --prompt codons"""
    temperature: float = 1.0
    """softmax temperature"""
    top_k: int = 10
    """0 = off"""
    top_p: float = 0.95
    """1.0 = off"""
    max_new_tokens: int | None = None
    """unset: up to the model's max_seq_len"""
    batch_size: int = 32
    """sequences sampled at once"""
    embed_run: str | None = None
    """run whose encoder embeds for the Fréchet distance (unset: --run); an aa run embeds the proteins"""
    esm: str | None = None
    """Hugging Face ESM checkpoint directory: embed the translated proteins with it (the paper: ESM-2 35M)"""
    pca_components: int = 4
    """PCA dimensions for the Fréchet distance"""
    pca_fit: Literal["reference", "both"] = "reference"
    """fit the PCA on the reference embeddings (the paper's) or on generated + reference (our earlier default)"""
    nn_threshold: float = 0.05
    """cosine distance for precision/recall"""
    samples: str | None = None
    """FASTA of the samples (unset: OUT with .fasta)"""
    seed: int = 0
    """sampling seed"""

    def __post_init__(self) -> None:
        if self.embed_run and self.esm:
            raise ValueError("argument --embed-run: not allowed with argument --esm")


RECORDED = ("reference", "prompt", "prompt_codons", "temperature", "top_k", "top_p", "pca_components", "pca_fit",
            "nn_threshold")  # fmt: skip


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf everything outside the top-k and outside the smallest set with cumulative prob >= top_p."""
    import torch

    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(
    model,
    prompts: list[np.ndarray],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 10,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """Continue each prompt (token ids without specials; may be empty) until ``<eos>`` or the length cap.

    Rows are right-padded; with causal attention a row never sees the pads after it, so each step takes the
    logits at the row's own last position. Returns the prompt + generated tokens, without specials.
    """
    import torch

    with torch.no_grad():
        return _sample(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, batch_size)


def _sample(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, batch_size) -> list[np.ndarray]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from helm.codons import CLS_ID, EOS_ID, SPECIALS

    model.eval()
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    allowed[len(SPECIALS) :] = True
    allowed[EOS_ID] = True
    out: list[np.ndarray] = []
    cap = int(model.config.max_seq_len)
    for b0 in range(0, len(prompts), batch_size):
        batch = prompts[b0 : b0 + batch_size]
        lengths = torch.tensor([1 + len(p) for p in batch])  # <cls> + prompt
        width = min(cap, int(lengths.max()) + max_new_tokens)
        if int(lengths.max()) >= width:
            raise InputError(f"a prompt of {int(lengths.max()) - 1} tokens leaves no room under max_seq_len={cap}")
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        ids[:, 0] = CLS_ID
        for i, p in enumerate(batch):
            ids[i, 1 : 1 + len(p)] = torch.as_tensor(p.astype(np.int64))
        done = torch.zeros(len(batch), dtype=torch.bool)
        start = lengths.clone()
        limit = (start + max_new_tokens).clamp_max(width)  # every row gets at most max_new_tokens new tokens
        while not done.all():
            active = ~done & (lengths < limit)
            if not active.any():
                break
            cur = int(lengths[active].max())
            mask = torch.arange(cur)[None, :] < lengths[:, None]
            logits = model(ids[:, :cur], mask)[torch.arange(len(batch)), (lengths - 1).clamp_max(cur - 1)]
            logits = logits.float().masked_fill(~allowed, float("-inf")) / max(temperature, 1e-6)
            probs = F.softmax(filter_logits(logits, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            rows = torch.nonzero(active).squeeze(1)
            ids[rows, lengths[rows]] = nxt[rows]
            done |= active & (nxt == EOS_ID)
            lengths[rows] += 1
            done |= lengths >= limit
        for i in range(len(batch)):
            seq = ids[i, 1 : int(lengths[i])].numpy()
            stop = np.nonzero(seq == EOS_ID)[0]
            out.append(seq[: stop[0]] if len(stop) and stop[0] >= int(start[i]) - 1 else seq)
    return out


# ------------------------------------------------------------------------------------------- reference


def read_reference(path: str | Path, limit: int, tokenizer=None) -> tuple[list[str], list[dict] | None]:
    """Held-out sequences (cleaned, in-frame DNA): a prepared directory (its test split, else val) decoded
    with its tokenizer, or any sequence file `helm.io` reads (txt/csv/FASTA/OAS; OAS rows via ``oas_cds``).
    For OAS CSV files the raw row dicts are returned too (for CDR3 prompts)."""
    from helm.io import DataError, OasRow, clean_sequence, detect_format, oas_cds, read_records

    path = Path(path)
    if path.is_dir():
        from helm.shards import TokenShards
        from helm.tokenizers import load_tokenizer

        split = next((path / s for s in ("test", "val") if (path / s / "index.json").is_file()), None)
        if split is None:
            raise InputError(f"{path}: a prepared directory needs a test/ or val/ split with index.json")
        tok = load_tokenizer(path) if (path / "tokenizer.json").is_file() else tokenizer
        shards = TokenShards(split)
        return [tok.decode(shards[i]) for i in range(min(limit, len(shards)))], None
    if not path.is_file():
        raise InputError(f"{path}: reference not found (give a prepared directory or a sequence file)")
    fmt = detect_format(path)
    if fmt == "oas":
        import pandas as pd

        from helm.io import oas_codon_regions

        frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=4 * limit, skiprows=_oas_metadata_rows(path))
        seqs, rows = [], []
        for _, row in frame.iterrows():
            try:
                cds, labels = oas_codon_regions(row.to_dict())
            except ValueError:
                continue  # rejected rows (counted by `helm prepare`) are not held-out sequences
            seqs.append(cds)
            rows.append({"labels": labels})
            if len(seqs) == limit:
                break
        return seqs, rows
    seqs = []
    try:
        for _, payload in read_records(path, fmt):
            if isinstance(payload, OasRow):
                seq, reason, _ = oas_cds(payload)
            else:
                seq, reason = clean_sequence(str(payload))
            if reason is None:
                seqs.append(seq)
            if len(seqs) == limit:
                break
    except DataError as exc:
        raise InputError(str(exc)) from exc
    return seqs, None


def _oas_metadata_rows(path: Path) -> list[int]:
    from helm.io import read_json_metadata

    return [0] if read_json_metadata(path) is not None else []


def make_prompts(tokenizer, refs: list[str], ref_rows, how: str, n_codons: int, num: int) -> list[np.ndarray]:
    import numpy as np

    empty = np.zeros(0, dtype=np.int64)
    if how == "none":
        return [empty] * num
    if not refs:
        raise InputError("prompts need reference sequences, and none were read")
    tokens = tokenizer.encode_batch(refs)
    if how == "codons":
        return [tokens[i % len(refs)][:n_codons] for i in range(num)]
    if ref_rows is None:
        raise InputError("--prompt cdr3 needs an OAS CSV reference (region coordinates)")
    if getattr(tokenizer, "name", "") != "3mer":
        raise InputError("--prompt cdr3 needs a codon (3mer) run: region labels are per codon")
    out = []
    for i in range(num):
        labels = ref_rows[i % len(refs)]["labels"]
        cut = labels.index("cdr3") if "cdr3" in labels else len(labels)
        out.append(tokens[i % len(refs)][:cut])
    return out


# ------------------------------------------------------------------------------------------- embedders


def to_protein(cds: str) -> str:
    """The protein a sampled or reference CDS encodes: its codons from the first base up to the first stop."""
    from helm.codons import translate

    return translate(cds).split("*", 1)[0]


class RunEmbedder:
    """Mean-pooled embeddings from a helm run's encoder; an ``aa`` run embeds the translated proteins.
    ``name`` (``run:<run id>``) is the embedding space's label in metric names."""

    def __init__(self, run) -> None:
        from helm.downstream.embed import run_mode
        from helm.tokenizers import tokenizer_alphabet

        self.model, self.tokenizer, self.mode = run.model, run.tokenizer, run_mode(run.config)
        self.alphabet = tokenizer_alphabet(run.tokenizer)
        self.name = f"run:{run.run_id}"

    def __call__(self, seqs: list[str]) -> np.ndarray:
        from helm.downstream.embed import embed_pooled, encode

        enc = encode(self.tokenizer, seqs, int(self.model.config.max_seq_len), mode=self.mode, alphabet=self.alphabet)
        return embed_pooled(self.model, enc).numpy()


class EsmEmbedder:
    """Mean-pooled residue embeddings of the translated proteins from a Hugging Face ESM checkpoint directory
    (the paper used ESM-2 35M, ``facebook/esm2_t12_35M_UR50D``; download it once, e.g. ``hf download``).
    ``name`` (``esm:<checkpoint name>``) is the embedding space's label in metric names."""

    alphabet = "aa"

    def __init__(self, path: str | Path, batch_size: int = 16) -> None:
        from transformers import AutoTokenizer, EsmModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--esm {path}: not a Hugging Face model directory (no config.json)")
        self.name = f"esm:{checkpoint_name(path)}"
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = EsmModel.from_pretrained(path, add_pooling_layer=False).eval()
        self.batch_size = batch_size

    def __call__(self, seqs: list[str]) -> np.ndarray:
        import numpy as np
        import torch

        from helm.downstream.embed import mean_pool

        out = []
        limit = int(self.model.config.max_position_embeddings) - 2  # room for <cls> and <eos>
        with torch.inference_mode():
            for start in range(0, len(seqs), self.batch_size):
                batch = self.tokenizer(
                    [s[:limit] for s in seqs[start : start + self.batch_size]],
                    padding=True,
                    return_tensors="pt",
                    return_special_tokens_mask=True,
                )
                residues = batch.pop("special_tokens_mask") == 0  # mean over residues only, as ESM users do
                hidden = self.model(**batch).last_hidden_state
                out.append(mean_pool(hidden.float(), residues & batch["attention_mask"].bool()).numpy())
        return np.concatenate(out)


# ------------------------------------------------------------------------------------------- metrics


def is_in_frame(seq: str) -> bool:
    """A coding fragment read in frame 0: at least one codon, length a multiple of 3, and no stop codon
    before the last codon (a final stop is allowed). OAS V(D)J sequences are such fragments without an ATG,
    which is why ``valid_orf_frac`` (ATG start too) is ~0 even for the reference set."""
    from helm.downstream.metrics import has_internal_stop

    return len(seq) >= 3 and len(seq) % 3 == 0 and not has_internal_stop(seq)


# metrics of one set of sequences; `score` reports each for the samples and, as ref_<name>, for the reference
SEQUENCE_METRICS = (
    "in_frame_frac",
    "valid_orf_frac",
    "no_internal_stop_frac",
    "mean_length_nt",
    "gc_content",
    "internal_diversity",
)


def sequence_metrics(seqs: list[str]) -> dict[str, float]:
    """The SEQUENCE_METRICS of one set: fractions over every sequence, GC and diversity over non-empty ones."""
    import numpy as np

    from helm.downstream.metrics import gc_content, has_internal_stop, internal_diversity, is_valid_orf

    nonempty = [s for s in seqs if s]

    def mean(values: list) -> float:
        return float(np.mean(values)) if values else float("nan")

    return {
        "in_frame_frac": mean([is_in_frame(s) for s in seqs]),
        "valid_orf_frac": mean([is_valid_orf(s) for s in seqs]),
        "no_internal_stop_frac": mean([not has_internal_stop(s) for s in seqs]),
        "mean_length_nt": mean([len(s) for s in seqs]),
        "gc_content": mean([gc_content(s) for s in nonempty]),
        "internal_diversity": internal_diversity(nonempty, max_pairs=2000),
    }


def score(
    generated: list[str],
    reference: list[str],
    embedder,
    pca_components: int,
    threshold: float,
    pca_fit: str = "reference",
) -> dict[str, float]:
    """Sequence statistics of the samples beside the reference's own (``ref_<metric>``), and the distance
    between their embedding clouds (``embedder``: sequences -> [N, H], labelled by ``embedder.name``; with
    ``alphabet == 'aa'`` both sets are translated to protein first, the paper's protocol). The Fréchet distance is
    taken on ``pca_components`` principal components fitted on the reference embeddings (``pca_fit="reference"``,
    the paper's) or on both sets (``"both"``)."""
    from helm.downstream.metrics import codon_usage_distance, frechet_distance, neighbour_precision_recall, pca_project

    gen_ok = [s for s in generated if s]
    m: dict[str, float] = {"num_samples": len(generated), "num_empty": len(generated) - len(gen_ok)}
    gen_stats, ref_stats = sequence_metrics(generated), sequence_metrics(reference)
    for name in SEQUENCE_METRICS:
        m[name], m[f"ref_{name}"] = gen_stats[name], ref_stats[name]
    m["gc_abs_diff"] = abs(m["gc_content"] - m["ref_gc_content"])
    m["codon_usage_distance"] = codon_usage_distance(gen_ok, reference)
    gen_in, ref_in = gen_ok, reference
    if embedder.alphabet == "aa":
        gen_in = [p for p in map(to_protein, gen_ok) if p]
        ref_in = [p for p in map(to_protein, reference) if p]
        m["num_empty_protein"] = len(gen_ok) - len(gen_in)
        m["ref_num_empty_protein"] = len(reference) - len(ref_in)
    if len(gen_in) >= 2 and len(ref_in) >= 2:
        e_gen, e_ref = embedder(gen_in), embedder(ref_in)
        a, b = pca_project(e_gen, e_ref, pca_components, reference_only=pca_fit == "reference")
        # the embedder in the name: distances from different embedding spaces must never share a column
        space = embedder.name
        m[f"frechet_distance@{space}"] = frechet_distance(a, b)
        m[f"precision@{space}"], m[f"recall@{space}"] = neighbour_precision_recall(e_gen, e_ref, threshold)
    return m


def generate(args: GenerateSettings) -> EvalRecord:
    import torch

    from helm.downstream.embed import check_alphabet, check_compatible, run_mode
    from helm.files import atomic_write
    from helm.run import load_run

    t0 = time.time()
    run = load_run(args.run)
    check_compatible(run.model, run.tokenizer, where=str(args.run))
    check_alphabet(run.tokenizer, "nuc", str(args.run))  # the metrics score ORFs, GC and codon usage
    mode = run_mode(run.config)
    if mode != "clm":
        raise InputError(
            f"{args.run}: helm generate needs a CLM (causal) run, but this run was trained with mode="
            f"{run.config.get('mode', 'mlm')!r}{' (bidirectional)' if run.config.get('bidirectional') else ''}"
        )
    refs, ref_rows = read_reference(args.reference, args.num_reference, run.tokenizer)
    if len(refs) < 2:
        raise InputError(f"{args.reference}: need at least 2 reference sequences, read {len(refs)}")
    prompts = make_prompts(run.tokenizer, refs, ref_rows, args.prompt, args.prompt_codons, args.num_samples)
    cap = int(run.model.config.max_seq_len)
    max_new = args.max_new_tokens or cap
    torch.manual_seed(args.seed)
    tokens = sample(run.model, prompts, max_new, args.temperature, args.top_k, args.top_p, args.seed, args.batch_size)
    generated = [run.tokenizer.decode(t) for t in tokens]
    if args.esm:
        embedder = EsmEmbedder(args.esm)
    elif args.embed_run:
        embedder_run = load_run(args.embed_run)
        check_compatible(embedder_run.model, embedder_run.tokenizer, where=str(args.embed_run))
        embedder = RunEmbedder(embedder_run)
    else:
        embedder = RunEmbedder(run)
    metrics = score(generated, refs, embedder, args.pca_components, args.nn_threshold, args.pca_fit)
    samples = Path(args.samples) if args.samples else Path(args.out).with_suffix(".fasta")
    fasta = "".join(f">sample_{i} prompt_tokens={len(p)}\n{s}\n" for i, (p, s) in enumerate(zip(prompts, generated)))
    atomic_write(samples, fasta)
    provenance = {
        "kind": "generate", "run_dir": str(args.run), "num_reference": len(refs), "max_new_tokens": max_new,
        "embedder": str(args.esm or args.embed_run or args.run), "embedder_name": embedder.name,
        "embedding_space": "protein" if embedder.alphabet == "aa" else "nucleotide", "samples_file": str(samples),
        "seconds": round(time.time() - t0, 2),
    }  # fmt: skip
    settings = recorded(args, RECORDED, {"prompt_codons": args.prompt == "codons"})
    return EvalRecord(run.run_id, "generation", args.seed, metrics, settings, provenance)


def build_parser() -> HelmParser:
    return settings_parser("helm generate", __doc__.splitlines()[0], GenerateSettings, ("run", "reference", "out"))


def summary(p: dict[str, Any]) -> str:
    return (
        f"{p['run']}: {p['metrics']['num_samples']} samples, in frame {p['metrics']['in_frame_frac']:.3f} "
        f"(reference {p['metrics']['ref_in_frame_frac']:.3f}), Fréchet distance "
        f"{p['metrics'].get('frechet_distance@' + p['config']['embedder_name'], float('nan')):.3f} "
        f"in {p['config']['embedder_name']}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), generate, argv, summary)


if __name__ == "__main__":
    sys.exit(main())
