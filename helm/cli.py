"""`helm` command: one entry point, one module per subcommand (imported lazily so `helm --help` is fast)."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with a `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch": ("helm.fetch", "locate a raw data file (mirror first, else download) and check its sha256"),
    "prepare": ("helm.prepare", "clean, validate, split and encode sequences into token shards"),
    "train": ("helm.train", "pretrain a model (every flag of the HELM train.py, plus --config YAML)"),
    "embed": ("helm.downstream.features", "a run's frozen embeddings of one dataset, shared by every head and seed"),
    "probe": ("helm.downstream.probe", "property prediction on a benchmark with a frozen or fine-tuned model"),
    "baseline": ("helm.downstream.baselines", "one-hot TextCNN / k-mer / TF-IDF ridge baselines"),
    "annotate": ("helm.downstream.annotate", "antibody region annotation (FWR/CDR per codon)"),
    "generate": ("helm.downstream.generate", "sample sequences from a CLM checkpoint and score them"),
    "design": ("helm.design.command", "coding sequences for a protein, scored (CAI, GC, MFE, likelihood)"),
    "design-bench": ("helm.design.benchmark", "design benchmark: codon recovery, natural-CDS likelihood, trade-off"),
    "cluster": ("helm.downstream.cluster", "synonymous-variant clustering (silhouette score)"),
    "tables": ("helm.report.cli", "gather run metrics into results/tables.csv and pivot tables"),
    "models": ("helm.models", "list registered backbones, presets, losses and tokenizers"),
    "export": ("helm.export", "write a run as a Hugging Face folder (AutoTokenizer / AutoModel*, no helm needed)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: helm <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`helm <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from helm import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"helm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except SystemExit as exc:  # --help, a usage or user error (helm.args): its status, also to a caller in Python
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
