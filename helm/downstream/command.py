"""The settings of the evaluation commands (`helm embed | probe | baseline | annotate | cluster | generate`),
built from shared groups, and the one record they all return.

Each command's settings class is a dataclass that inherits the groups it needs (where the model comes from, the
dataset, the head grid, ...); `build_parser` turns it into flags with helm.args' generator (one argument group per
shared group, the field docstrings as help) and `parse` gives back the typed settings (a usage error: one line,
exit 2). A command returns an `EvalRecord`; `EvalRecord.to_json` is the JSON every evaluation file holds
(``run, task, seed, metrics, config[, predictions]``: what helm/report/gather.py reads), its ``config`` the recorded
settings (`recorded`, taken from the dataclass) beside what the command found (provenance).

No heavy import here: ``helm <command> --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from helm.args import HelmParser, add_dataclass, command_errors, from_values
from helm.downstream.common import DEFAULT_ALPHAS, PROBE_HEADS
from helm.downstream.source import source_error
from helm.errors import user_message
from helm.files import write_json

ALIASES = {"out": ("--output",), "data_file": ("--data",), "reference": ("--data",)}  # the project-wide names


# ------------------------------------------------------------------------------------------ shared groups
@dataclass
class FromRun:
    """Where the model comes from."""

    run: str | None = None
    """run directory (model/, tokenizer/, config.yaml)"""


@dataclass
class FromHf:
    """Any Hugging Face checkpoint (docs/PROTOCOL.md, 'Foreign checkpoints')."""

    hf: str | None = None
    """local Hugging Face model + tokenizer folder; features = hidden states of the last layer"""
    hf_name: str | None = None
    """run id is hf:<name> (default: the folder's name)"""
    trust_remote_code: bool | None = None
    """let the checkpoint run its own code (trust_remote_code=True)"""
    hf_alphabet: Literal["dna", "rna"] | None = None
    """T or U in the text (default dna)"""
    hf_words: Literal["none", "base", "codon"] | None = None
    """none: one string (default); base / codon: bases / codons joined by --hf-sep"""
    hf_sep: str | None = None
    """separator of --hf-words (default: one space)"""


class SourceChecked:
    """Mixin of a settings class with a model source: exactly one source, --hf options only with --hf."""

    def __post_init__(self) -> None:
        if err := source_error(self):
            raise ValueError(err)


@dataclass
class FromFeatures:
    """Frozen embeddings instead of a model."""

    features: str | None = None
    """frozen embeddings of the dataset written by `helm embed` (shared by every head and seed)"""


@dataclass
class Output:
    """The output."""

    out: str = ""
    """output JSON file"""


@dataclass
class Dataset:
    """The dataset."""

    dataset: str = ""
    """registry name (config/datasets.yaml)"""
    registry: str | None = None
    """dataset registry YAML (unset: config/datasets.yaml)"""
    mirror: str | None = None
    """local data mirror searched before the URL"""
    data_file: str | None = None
    """read the dataset from this file instead (no sha256 check)"""
    max_rows: int | None = None
    """a fixed random subset of the dataset's rows, the same for every seed (large sets)"""
    overlong: Literal["truncate", "error"] = "truncate"
    """sequences longer than the model's max_seq_len: cut (counted) or refuse"""


@dataclass
class Reference:
    """The held-out sequences."""

    reference: str = ""
    """held-out sequences: a prepared directory (its test split) or a sequence file"""


@dataclass
class Runtime:
    """The machine."""

    threads: int | None = None
    """torch CPU threads (unset: torch's default)"""
    quiet: bool = False
    """no progress bars"""


@dataclass
class Embedding:
    """The embedding step."""

    max_len: int | None = None
    """token cap (default and upper bound: max_seq_len; --hf: max positions)"""
    embed_batch_size: int = 64
    """sequences per forward pass when embedding"""
    bf16: bool = False
    """extract frozen embeddings under bfloat16 autocast"""
    compile: bool = False
    """torch.compile the backbone for embedding (compiles once: large sets)"""


@dataclass
class HeadGrid:
    """The seed, the head and its grid (selected on validation Spearman)."""

    seed: int = 0
    """downstream seed (also re-draws random splits)"""
    head: Literal[PROBE_HEADS] = "textcnn"
    """textcnn (the paper's), linear/mlp on pooled embeddings, ridge (closed form, pooled)"""
    epochs: int = 100
    """most epochs per grid point"""
    patience: int = 15
    """early-stopping patience (epochs)"""
    batch_sizes: list[int] = field(default_factory=lambda: [16, 32])
    """head batch sizes tried"""
    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-4])
    """head learning rates"""
    max_train: int | None = None
    """subsample the training split (smoke runs)"""
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    """ridge penalties tried (chosen on validation Spearman)"""


# ------------------------------------------------------------------------------------------ parser, record
def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def settings_parser(prog: str, description: str, cls: type, required: tuple[str, ...] = ()) -> HelmParser:
    """The flags of settings class `cls`: one argument group per shared group it inherits (titled by the group's
    docstring, in the order of its bases), then its own fields; `required` fields must be given (argparse's own
    check and message)."""
    parser = HelmParser(prog, description)
    groups = [g for g in cls.__mro__[1:] if dataclasses.is_dataclass(g)]
    done: set[str] = set()
    for group in [*groups, cls]:
        names = [n for n in _fields(group) if n not in done]
        if not names:
            continue
        add_dataclass(
            parser,
            cls,
            (group.__doc__ or "").strip().splitlines()[0].rstrip("."),
            skip=tuple(n for n in _fields(cls) if n not in names),
            aliases=ALIASES,
        )
        done.update(names)
    for action in parser._actions:
        if action.dest in required:
            action.required = True
    parser.set_defaults(settings_class=cls)
    return parser


def parse(parser: HelmParser, argv: list[str] | None) -> Any:
    """The typed settings of `settings_parser`'s class from the command line; a check in its ``__post_init__``
    that fails is a usage error (one line, exit 2)."""
    args = parser.parse_args(argv)
    try:
        return from_values(args.settings_class, vars(args))
    except ValueError as e:
        parser.error(user_message(e))


def recorded(settings: Any, names: tuple[str, ...], applies: dict[str, bool] | None = None) -> dict[str, Any]:
    """The settings `names` as the output JSON records them (from ``dataclasses.asdict``); a setting whose
    ``applies`` entry is False (a grid a ridge head has not, say) is recorded as None."""
    values = dataclasses.asdict(settings)
    return {n: values[n] if (applies or {}).get(n, True) else None for n in names}


@dataclass
class EvalRecord:
    """What an evaluation command returns and writes: the JSON helm/report/gather.py reads (``config`` = the recorded
    settings beside the provenance; ``predictions`` only where a task has per-row test predictions)."""

    run: str
    task: str
    seed: int
    metrics: dict[str, Any]
    settings: dict[str, Any]
    provenance: dict[str, Any]
    predictions: dict[str, list] | None = None

    def to_json(self) -> dict[str, Any]:
        both = set(self.settings) & set(self.provenance)
        if both:
            raise RuntimeError(f"internal error: {sorted(both)} recorded as settings and as provenance")
        out = {"run": self.run, "task": self.task, "seed": self.seed, "metrics": self.metrics,
               "config": {**self.settings, **self.provenance}}  # fmt: skip
        if self.predictions is not None:
            out["predictions"] = self.predictions
        return out


# ----------------------------------------------------------------------------------------------- the tail
def run_json_command(prog: str, compute: Callable[[Any], EvalRecord], settings: Any,
                     summary: Callable[[dict[str, Any]], str]) -> int:  # fmt: skip
    """Shared tail of the downstream commands: the record's JSON at ``settings.out`` and a summary line; a user
    error (bad input, a missing file: helm.args.command_errors) ends the command with one line, exit 2, and no
    JSON."""
    with command_errors(prog):
        payload = compute(settings).to_json()
        write_json(settings.out, payload)
    print(f"{summary(payload)} -> {settings.out}")
    return 0


def run_command(parser: HelmParser, compute: Callable[[Any], EvalRecord], argv: list[str] | None,
                summary: Callable[[dict[str, Any]], str]) -> int:  # fmt: skip
    """A downstream command's ``main``: its settings from ``argv``, then `run_json_command`."""
    return run_json_command(parser.prog, compute, parse(parser, argv), summary)


def regression_summary(payload: dict[str, Any]) -> str:
    """`helm probe` / `helm baseline`: test (and validation) Spearman of the selected configuration."""
    m = payload["metrics"]
    return (
        f"{payload['run']} {payload['task']} seed={payload['seed']}: test spearman={m['spearman']:.4f} "
        f"(val {m['val_spearman']:.4f})"
    )
