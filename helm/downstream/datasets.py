"""The downstream dataset registry (``config/datasets.yaml``) and a validated loader.

``load_registry(path)`` checks every entry (required keys, no unknown keys, known split/task kinds) and
raises ``RegistryError`` naming the registry file and the entry. ``load_dataset(name, ...)`` locates the file
(mirror first, sha256-checked), checks the columns and every row, and returns cleaned DNA sequences,
float targets and a train/val/test assignment. A bad row is an error naming the file, the 1-based line
(the header is line 1) and the reason -- nothing is dropped silently.

Splits (docs/ARCHITECTURE.md, Downstream): ``{column: NAME}`` is predefined and the same for every downstream
seed; ``{random: ...}`` and ``{similarity: ...}`` are re-drawn per downstream seed with split seed = registry
``seed`` + downstream seed (downstream seed 0 = the registry's own split), so the sd over seeds includes split
variance. ``similarity`` finds every pair of sequences at the registry's identity/coverage threshold with an
all-vs-all MMseqs2 ``easy-search``, groups the connected components of those pairs (merged with the
``easy-linclust`` clusters at the same threshold) and keeps every group in one part, so no row of one part
reaches the threshold with a row of another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from helm.io import DataError, clean_sequence, read_table, uninformative
from helm.splits import SPLITS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY = REPO / "config" / "datasets.yaml"
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
_REQUIRED = ("file", "sequence_column", "target_column", "task", "metric", "split", "alphabet", "sequence_type")
_OPTIONAL = ("url", "sha256", "available", "codon_frame", "note")
TASKS = ("regression",)
# allowed keys per split kind (the kind is the key that names it)
_SPLIT_KEYS = {
    "column": {"column"},
    "random": {"random", "seed", "group_column"},
    "similarity": {"similarity", "min_seq_id", "coverage", "seed", "group_column"},
}
_SPLIT_SCHEMA = (
    "{column: NAME}, {random: [train, val, test], seed: S[, group_column: NAME]} or "
    "{similarity: [train, val, test], min_seq_id: X, coverage: C, seed: S[, group_column: NAME]}"
)
MMSEQS_INSTALL = "install MMseqs2: `apt-get install mmseqs2` or `conda install -c bioconda mmseqs2`"
METRICS = ("spearman", "pearson", "r2")


class RegistryError(ValueError):
    """A bad registry entry: names the registry file, the entry and the key."""


class DatasetError(ValueError):
    """A bad dataset file or row: names the file (and line)."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    file: str
    sequence_column: str
    target_column: str
    task: str
    metric: str
    split: dict[str, Any]
    alphabet: str
    sequence_type: str
    url: str | None = None
    sha256: str | None = None
    available: bool = True
    codon_frame: int = 0
    note: str = ""


@dataclass
class DownstreamData:
    """Cleaned sequences (upper-case DNA), float targets and the split label ('train'|'val'|'test') per row."""

    spec: DatasetSpec
    path: Path
    sequences: list[str]
    targets: np.ndarray
    split: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)
    # how the split was made, for the output JSON config: split (predefined|random|similarity), split_seed
    # (null for predefined), and for similarity min_seq_id, coverage, n_similar_pairs, n_clusters (components of
    # the similar pairs merged with linclust clusters), n_groups (those merged with group_column groups)
    split_info: dict[str, Any] = field(default_factory=dict)
    rows: np.ndarray | None = None  # position of each row in the loaded dataset (subsample keeps a subset)

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.arange(len(self.sequences))

    def indices(self, part: str) -> np.ndarray:
        return np.nonzero(self.split == part)[0]


def _check_entry(name: str, entry: Any, where: str) -> DatasetSpec:
    def bad(key: str, why: str) -> RegistryError:
        return RegistryError(f"{where}: dataset {name!r}, key {key!r}: {why}")

    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: dataset {name!r}: expected a mapping, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise bad(unknown[0], f"unknown key (valid keys: {', '.join(_REQUIRED + _OPTIONAL)})")
    for key in _REQUIRED:
        if entry.get(key) in (None, ""):
            raise bad(key, "required key is missing or empty")
    if entry["task"] not in TASKS:
        raise bad("task", f"{entry['task']!r} is not one of {TASKS}")
    if entry["metric"] not in METRICS:
        raise bad("metric", f"{entry['metric']!r} is not one of {METRICS}")
    if entry["alphabet"] not in ("rna", "dna"):
        raise bad("alphabet", f"{entry['alphabet']!r} is not rna or dna")
    if entry["sequence_type"] not in ("cds", "noncoding"):
        raise bad("sequence_type", f"{entry['sequence_type']!r} is not cds or noncoding")
    _check_split(entry["split"], bad)
    frame = entry.get("codon_frame", 0)
    if frame not in (0, 1, 2):
        raise bad("codon_frame", f"must be 0, 1 or 2, got {frame!r}")
    sha = entry.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise bad("sha256", "must be 64 hex digits or null (unknown)")
    return DatasetSpec(name=name, **{k: v for k, v in entry.items() if v is not None or k in ("url", "sha256")})


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_split(split: Any, bad: Any) -> None:
    kinds = [k for k in _SPLIT_KEYS if isinstance(split, dict) and k in split]
    if len(kinds) != 1:
        raise bad("split", f"expected exactly one of {_SPLIT_SCHEMA}")
    kind = kinds[0]
    unknown = sorted(set(split) - _SPLIT_KEYS[kind])
    if unknown:
        raise bad("split", f"unknown {kind} split key(s) {unknown} (valid: {sorted(_SPLIT_KEYS[kind])})")
    if kind == "column":
        return
    fr = split[kind]
    if not (isinstance(fr, list) and len(fr) == 3 and all(_number(x) and x > 0 for x in fr)):
        raise bad("split", f"{kind} fractions must be three positive numbers, got {fr!r}")
    if abs(sum(fr) - 1) > 1e-6:
        raise bad("split", f"{kind} fractions must sum to 1, got {sum(fr)}")
    seed = split.get("seed", 0)
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise bad("split", f"seed must be a non-negative integer, got {seed!r}")
    if "group_column" in split and not (isinstance(split["group_column"], str) and split["group_column"]):
        raise bad("split", f"group_column must be a column name, got {split['group_column']!r}")
    if kind == "similarity":
        for key in ("min_seq_id", "coverage"):
            if key not in split:
                raise bad("split", f"similarity split needs {key} (a number in (0, 1]; see config/datasets.yaml)")
            if not (_number(split[key]) and 0 < split[key] <= 1):
                raise bad("split", f"{key} must be a number in (0, 1], got {split[key]!r}")


def load_registry(path: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    """Parse and validate the registry; the dataset names are its keys."""
    if path is None:  # the checkout's registry (editable installs), else ./config/datasets.yaml
        path = DEFAULT_REGISTRY if DEFAULT_REGISTRY.is_file() else Path("config") / "datasets.yaml"
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: dataset registry not found")
    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), dict):
        raise RegistryError(f"{path}: expected a top-level 'datasets:' mapping of name -> entry")
    return {str(name): _check_entry(str(name), entry, str(path)) for name, entry in doc["datasets"].items()}


def get_spec(name: str, registry: str | os.PathLike | None = None) -> DatasetSpec:
    specs = load_registry(registry)
    if name not in specs:
        raise RegistryError(f"{registry or DEFAULT_REGISTRY}: unknown dataset {name!r}; known: {', '.join(specs)}")
    return specs[name]


def locate(spec: DatasetSpec, mirror: str | os.PathLike | None = None, dest: str | os.PathLike | None = None) -> Path:
    """The verified local file of ``spec`` (mirror first, then its URL)."""
    from helm.fetch import locate_file

    if not spec.available:
        raise DatasetError(f"dataset {spec.name!r} ({spec.file}) is not available: {spec.note}")
    return locate_file(spec.file, url=spec.url, sha256=spec.sha256, mirror=mirror, dest=dest)


def split_indices(n: int, fractions: list[float], seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Seeded random train/val/test labels; with ``groups`` every group lands in one part (by group counts)."""
    rng = np.random.default_rng(seed)
    labels = np.empty(n, dtype=object)
    if groups is None:
        order = rng.permutation(n)
        units = [np.array([i]) for i in order]
    else:
        uniq, inverse = np.unique(groups, return_inverse=True)
        members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
        units = [members[g] for g in rng.permutation(len(uniq))]
    cuts = np.cumsum(fractions)[:2] * len(units)
    for u, rows in enumerate(units):
        labels[rows] = "train" if u < round(cuts[0]) else ("val" if u < round(cuts[1]) else "test")
    return labels.astype(str)


def linclust(sequences: list[str], min_seq_id: float, coverage: float, where: str) -> np.ndarray:
    """Cluster label per sequence (the index of its cluster representative among the distinct sequences) from
    MMseqs2 ``easy-linclust`` on nucleotides, run in a temp dir (nothing cached). Identical sequences share a
    label. Coverage mode 0 (both sequences covered), one thread so the clusters do not depend on the machine."""
    exe = shutil.which("mmseqs")
    if exe is None:
        raise DatasetError(f"{where}: the similarity split needs MMseqs2 ('mmseqs' is not on PATH); {MMSEQS_INSTALL}")
    index: dict[str, int] = {}
    distinct = [index.setdefault(s, len(index)) for s in sequences]
    with tempfile.TemporaryDirectory(prefix="helm-linclust-") as tmp:
        fasta = Path(tmp) / "seqs.fasta"
        fasta.write_text("".join(f">{k}\n{s}\n" for s, k in index.items()))
        cmd = [exe, "easy-linclust", str(fasta), f"{tmp}/out", f"{tmp}/work", "--dbtype", "2"]
        cmd += ["--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", "0", "--threads", "1", "-v", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise DatasetError(f"{where}: mmseqs easy-linclust failed (exit {proc.returncode}): {last}")
        rep = np.full(len(index), -1, dtype=np.int64)
        for line in (Path(tmp) / "out_cluster.tsv").read_text().splitlines():
            head, member = line.split("\t")
            rep[int(member)] = int(head)
    if (rep < 0).any():  # every sequence must come back in some cluster, never dropped
        raise DatasetError(f"{where}: mmseqs easy-linclust left {int((rep < 0).sum())} sequence(s) unclustered")
    return rep[np.asarray(distinct, dtype=np.int64)]


def similar_pairs(sequences: list[str], min_seq_id: float, coverage: float, where: str) -> np.ndarray:
    """[P, 2] index pairs (i < j) of the distinct ``sequences`` whose MMseqs2 alignment reaches ``min_seq_id``
    identity (matches over alignment length, ``--seq-id-mode 0``) over at least ``coverage`` of both sequences
    (``--cov-mode 0``): an all-vs-all nucleotide ``easy-search`` in a temp dir (nothing cached), every hit kept
    (no E-value cut, ``--max-seqs`` = all), k = 11 (the index of k = 15 takes 8 GB), one thread."""
    exe = shutil.which("mmseqs")
    if exe is None:
        raise DatasetError(f"{where}: the similarity split needs MMseqs2 ('mmseqs' is not on PATH); {MMSEQS_INSTALL}")
    with tempfile.TemporaryDirectory(prefix="helm-similarity-") as tmp:
        fasta = Path(tmp) / "seqs.fasta"
        fasta.write_text("".join(f">{k}\n{s}\n" for k, s in enumerate(sequences)))
        cmd = [exe, "easy-search", str(fasta), str(fasta), f"{tmp}/hits.tsv", f"{tmp}/work", "--search-type", "3"]
        cmd += ["--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", "0", "--seq-id-mode", "0"]
        cmd += ["--alignment-mode", "3", "-e", "inf", "--max-seqs", str(max(len(sequences), 300)), "-k", "11"]
        cmd += ["--format-output", "query,target", "--threads", "1", "-v", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise DatasetError(f"{where}: mmseqs easy-search failed (exit {proc.returncode}): {last}")
        hits = np.array([line.split("\t") for line in Path(f"{tmp}/hits.tsv").read_text().splitlines()], dtype=np.int64)
    hits = hits.reshape(-1, 2)
    pairs = np.sort(hits[hits[:, 0] != hits[:, 1]], axis=1)
    return np.unique(pairs, axis=0)


def similarity_groups(sequences: list[str], min_seq_id: float, coverage: float, where: str) -> tuple[np.ndarray, int]:
    """Group label per sequence: connected components of the ``similar_pairs`` at the threshold, merged with the
    ``linclust`` clusters at the same threshold, so no two rows in different groups reach it by either search
    (identical sequences share a label). Linclust alone did not give that (it is greedy: at 0.95, 14 of 315 MLOS
    test rows over 20 seeds had a >= 95 %-identical training row); the all-vs-all search alone does not join
    every pair linclust joins (iCodon at 0.5: 3,312 components from the search, 3,287 linclust clusters, 3,256
    merged). Returns (labels, number of similar pairs among the distinct sequences)."""
    index: dict[str, int] = {}
    distinct = np.array([index.setdefault(s, len(index)) for s in sequences], dtype=np.int64)
    pairs = similar_pairs(list(index), min_seq_id, coverage, where)
    clusters = linclust(list(index), min_seq_id, coverage, where)
    return merge_groups(components(len(index), pairs), clusters)[distinct], len(pairs)


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected component of each of ``n`` nodes given [E, 2] edges: the smallest node index in it."""
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for i, j in np.asarray(edges, dtype=np.int64).reshape(-1, 2).tolist():
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def merge_groups(*labels: np.ndarray) -> np.ndarray:
    """Connected components of rows that share any label (e.g. a cluster or a gene): component id per row."""
    n = len(labels[0])
    edges = []
    for lab in labels:
        first: dict[Any, int] = {}
        edges += [(i, first.setdefault(v, i)) for i, v in enumerate(lab.tolist())]
    return components(n, np.array(edges, dtype=np.int64))


def load_dataset(
    name: str,
    registry: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    seed: int = 0,
    max_rows: int | None = None,
) -> DownstreamData:
    """Load, validate and split one registry dataset (``path`` overrides where the file is read from).

    ``seed`` is the downstream seed: random and similarity splits use split seed = registry ``seed`` + ``seed``
    (0 = the registry's split); predefined (column) splits ignore it. ``max_rows`` keeps a fixed random subset
    of the rows (numpy seed 0, whatever the downstream seed, so every seed and every model sees the same rows)
    before the split: for laptop-sized runs on large sets such as iCodon."""
    spec = get_spec(name, registry)
    file = Path(path) if path else locate(spec, mirror)
    frame, line, n_full = _read_rows(spec, file, max_rows)
    targets = _targets(spec, frame, file, line)
    sequences = []
    for i, raw in enumerate(frame[spec.sequence_column]):
        seq, reason = clean_sequence(raw)
        if reason is None and uninformative(seq):
            reason = "uninformative (every base is N)"
        if reason:
            raise DatasetError(f"{file}, line {line[i]}: sequence column {spec.sequence_column!r}: {reason}")
        sequences.append(seq)
    split, info = _assign_split(spec, frame, sequences, seed, file, line)
    for part in SPLITS:
        if not (split == part).any():
            how = ", ".join(f"{k}={v}" for k, v in info.items())
            raise DatasetError(f"{file}: the {part} split is empty ({how})")
    stats = {f"n_{p}": int((split == p).sum()) for p in SPLITS}
    if len(frame) < n_full:
        stats["n_rows_full"] = n_full
        info["rows"] = f"fixed subsample of {len(frame)} of {n_full} rows (numpy seed 0)"
    return DownstreamData(
        spec=spec, path=file, sequences=sequences, targets=targets, split=split, stats=stats, split_info=info
    )


def _read_rows(spec: DatasetSpec, file: Path, max_rows: int | None) -> tuple[Any, np.ndarray, int]:
    """(the table, or its fixed ``max_rows`` subsample; the 1-based file line of each row; the rows in the file)."""
    try:
        frame = read_table(file)
    except DataError as exc:
        raise DatasetError(str(exc)) from exc
    for key in ("sequence_column", "target_column"):
        column = getattr(spec, key)
        if column not in frame.columns:
            raise DatasetError(
                f"{file}: {key} {column!r} (registry entry {spec.name!r}) is not a column; columns: "
                f"{list(frame.columns)}"
            )
    if len(frame) == 0:
        raise DatasetError(f"{file}: no data rows")
    line = np.arange(len(frame)) + 2  # header is line 1
    n_full = len(frame)
    if max_rows is not None and max_rows < 1:
        raise DatasetError(f"{file}: --max-rows {max_rows}: must be >= 1")
    if max_rows is not None and max_rows < len(frame):
        keep = np.sort(np.random.default_rng(0).choice(len(frame), max_rows, replace=False))
        frame, line = frame.iloc[keep].reset_index(drop=True), line[keep]
    return frame, line, n_full


def _targets(spec: DatasetSpec, frame: Any, file: Path, line: np.ndarray) -> np.ndarray:
    """The target column as floats; a non-numeric or missing value is an error naming its lines."""
    import pandas as pd

    raw_targets = frame[spec.target_column].str.strip()
    targets = pd.to_numeric(raw_targets, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.nonzero(~np.isfinite(targets))[0]
    if len(bad):
        shown = ", ".join(f"line {line[i]} ({raw_targets.iloc[i]!r})" for i in bad[:5])
        raise DatasetError(
            f"{file}: target column {spec.target_column!r} has {len(bad)} non-numeric or missing value(s): {shown}"
        )
    return targets


def _assign_split(spec: DatasetSpec, frame: Any, sequences: list[str], seed: int, file: Path,
                  line: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """(train/val/test per row, what the JSON records about the split): predefined, random or similarity."""
    name = spec.name
    if "column" in spec.split:
        column = spec.split["column"]
        if column not in frame.columns:
            raise DatasetError(f"{file}: split column {column!r} (registry entry {name!r}) is not a column")
        mapped = frame[column].str.strip().str.lower().map(_SPLIT_ALIASES)
        bad = np.nonzero(mapped.isna().to_numpy())[0]
        if len(bad):
            i = bad[0]
            raise DatasetError(
                f"{file}, line {line[i]}: split {frame[column].iloc[i]!r} in column {column!r} is not train/val/test"
            )
        return mapped.to_numpy(dtype=str), {"split": "predefined", "split_seed": None}
    kind = "similarity" if "similarity" in spec.split else "random"
    split_seed = int(spec.split.get("seed", 0)) + int(seed)
    info: dict[str, Any] = {"split": kind, "split_seed": split_seed}
    group_col = spec.split.get("group_column")
    if group_col and group_col not in frame.columns:
        raise DatasetError(f"{file}: split group_column {group_col!r} (registry entry {name!r}) is not a column")
    groups = frame[group_col].to_numpy(dtype=str) if group_col else None
    if kind == "similarity":
        min_id, cov = float(spec.split["min_seq_id"]), float(spec.split["coverage"])
        clusters, n_pairs = similarity_groups(sequences, min_id, cov, where=f"{file} (registry entry {name!r})")
        groups = clusters if groups is None else merge_groups(clusters, groups)
        info.update(min_seq_id=min_id, coverage=cov, n_similar_pairs=n_pairs, n_clusters=len(np.unique(clusters)),
                    n_groups=len(np.unique(groups)))  # fmt: skip
    return split_indices(len(frame), spec.split[kind], split_seed, groups), info


def subsample(data: DownstreamData, max_train: int | None, seed: int) -> DownstreamData:
    """Keep at most ``max_train`` training rows (seeded) -- for smoke runs; val/test stay whole."""
    train = data.indices("train")
    if not max_train or len(train) <= max_train:
        return data
    rng = np.random.default_rng(seed)
    drop = set(rng.choice(train, len(train) - max_train, replace=False).tolist())
    keep = np.array([i for i in range(len(data.sequences)) if i not in drop])
    stats = dict(data.stats, n_train=int(max_train), n_train_full=len(train))
    return DownstreamData(
        spec=data.spec,
        path=data.path,
        sequences=[data.sequences[i] for i in keep],
        targets=data.targets[keep],
        split=data.split[keep],
        stats=stats,
        split_info=data.split_info,
        rows=data.rows[keep],
    )
