# Grid expansion, wildcard constraints and input functions (no rules here).
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(workflow.basedir)
R = config.get("results", "results")
LEARNED_TOKENIZERS = ("bpe", "wp", "ug")


def resolve_mirror():
    """data.mirror (relative paths resolve against the repository root); HELM_DATA_MIRROR overrides it."""
    mirror = os.environ.get("HELM_DATA_MIRROR") or config["data"].get("mirror")
    if not mirror:
        return ""
    path = Path(mirror)
    return str(path if path.is_absolute() else (REPO / path).resolve())


MIRROR = resolve_mirror()


def _put_helm_on_path():
    """Rules call `helm`: without --sdm conda it is the one installed beside the Python running snakemake
    (e.g. .venv/bin), so an unactivated `.venv/bin/snakemake` works; jobs inherit the PATH (Slurm too)."""
    bindir = Path(sys.executable).parent
    if (bindir / "helm").exists() and shutil.which("helm") != str(bindir / "helm"):
        os.environ.update(PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


_put_helm_on_path()


def format_args(args):
    """{flag: value} -> shell-quoted command-line flags (true: --flag; false: --no-flag; null: left out)."""
    words = []
    for key, value in (args or {}).items():
        if value is None:
            continue
        if value is False:
            words.append(f"--no-{key}")
            continue
        words.append(f"--{key}")
        if value is True:
            continue
        values = value if isinstance(value, list) else [value]
        words += [shlex.quote(str(v)) for v in values]
    return " ".join(words)


def preset_name(arch, mode, size):
    """The model preset of a grid point: pretrain.presets["<arch>-<size>"] (per mode) or "<arch>-<size>"."""
    key = f"{arch}-{size}"
    entry = config.get("pretrain", {}).get("presets", {}).get(key, key)
    return entry[mode] if isinstance(entry, dict) else entry


def expand_runs():
    """run id -> grid coordinates; the union of every block's cartesian product, in config order."""
    runs = {}
    for block, axes in config["grids"].items():
        for loss in axes["loss"]:
            if loss not in config["losses"]:
                raise ValueError(f"grids.{block}.loss: {loss!r} is not an id under `losses`")
        for arch, mode, size, loss, tok in itertools.product(
            axes["arch"], axes["mode"], axes["size"], axes["loss"], axes["tokenizer"]
        ):
            run = f"{arch}-{mode}-{size}-{loss}-{tok}"
            if run in runs:
                runs[run]["grid"] += f"+{block}"
                continue
            spec = config["losses"][loss]
            runs[run] = {
                "run": run,
                "grid": block,
                "arch": arch,
                "mode": mode,
                "size": size,
                "preset": preset_name(arch, mode, size),
                "loss_id": loss,
                "loss": spec["loss"],
                "hxe_alpha": spec.get("hxe_alpha"),
                "soft_labels_beta": spec.get("soft_labels_beta"),
                "hierarchy": spec.get("hierarchy", "true"),
                "tokenizer": tok,
            }
    return runs


RUNS = expand_runs()
TOKENIZERS = sorted({c["tokenizer"] for c in RUNS.values()})
UNITS = {u["name"]: u for u in config["data"]["pretrain"]}
TASKS = config["downstream"]["tasks"]
SEEDS = config["downstream"]["seeds"]


def _alternation(names):
    return "|".join(re.escape(str(n)) for n in sorted(names, key=lambda n: (-len(str(n)), str(n)))) or "(?!)"


def tasks_of(command):
    return [name for name, task in TASKS.items() if task["command"] == command]


def task_runs(task):
    """Pretrain runs a task applies to: runs of its `modes` (generate: CLM only) named by one of its `grids`."""
    spec = TASKS[task]
    modes = spec.get("modes") or (["clm"] if spec["command"] == "generate" else ["mlm", "clm"])
    blocks = set(spec.get("grids") or config["grids"])
    return [run for run, c in RUNS.items() if c["mode"] in modes and blocks & set(c["grid"].split("+"))]


with open(REPO / "config" / "datasets.yaml") as fh:
    DATASETS = yaml.safe_load(fh)["datasets"]
for _name in tasks_of("probe"):
    if TASKS[_name].get("dataset") not in DATASETS:
        raise ValueError(f"downstream.tasks.{_name}.dataset: not in config/datasets.yaml ({sorted(DATASETS)})")

# raw file (relative path under the mirror / results/raw) -> its url and sha256
RAW_FILES = {u["file"]: u for u in config["data"]["pretrain"]}
RAW_FILES.update(
    {DATASETS[TASKS[t]["dataset"]]["file"]: DATASETS[TASKS[t]["dataset"]] for t in tasks_of("probe")}
)


wildcard_constraints:
    run=_alternation(RUNS),
    unit=_alternation(UNITS),
    tokenizer=_alternation(TOKENIZERS),
    learned=_alternation(LEARNED_TOKENIZERS),
    rawfile=_alternation(RAW_FILES),
    task=_alternation(TASKS),
    seed=r"\d+",
    method=_alternation(config["downstream"].get("baselines", [])),


def resources(kind, key, default=None):
    return config["resources"][kind].get(key, default)


def slurm_resources(kind):
    """The resources of one kind of job, as rules declare them (the slurm plugin reads these names)."""
    res = {
        "mem_mb": resources(kind, "mem_mb"),
        "runtime": resources(kind, "runtime"),
        "gpu": resources(kind, "gpu"),
    }
    for key in ("gpu_model", "slurm_partition", "slurm_extra"):
        if resources(kind, key):
            res[key] = resources(kind, key)
    return res


def raw_path(relpath):
    return f"{R}/raw/{relpath}"


def unit_raw(wildcards):
    return raw_path(UNITS[wildcards.unit]["file"])


def unit_args(wildcards):
    unit = UNITS[wildcards.unit]
    args = dict(config["data"].get("prepare") or {})
    args["format"] = unit.get("format", "auto")
    args["orf"] = unit.get("orf", "none")
    return format_args(args)


def learned_tokenizer(wildcards):
    """A learned tokenizer is trained once (on the training split) before the units are encoded with it."""
    if wildcards.tokenizer in LEARNED_TOKENIZERS:
        return {"tokenizer": f"{R}/tokenizers/{wildcards.tokenizer}"}
    return {}


def tokenizer_args(wildcards, input):
    if wildcards.tokenizer in LEARNED_TOKENIZERS:
        return f"--tokenizer_file {input.tokenizer}/tokenizer.json"
    return ""


def run_corpus(wildcards):
    """The prepared corpus of a run (its test split is the held-out reference of generate / cluster)."""
    return f"{R}/data/{RUNS[wildcards.run]['tokenizer']}/corpus"


def train_args(wildcards):
    """Grid point -> `helm train` flags (pretrain.args, then pretrain.arch_args.<arch>, then the grid point)."""
    c = RUNS[wildcards.run]
    args = dict(config["pretrain"].get("args") or {})
    args.update((config["pretrain"].get("arch_args") or {}).get(c["arch"], {}))
    args.update(
        {
            "preset": c["preset"],
            "mode": c["mode"],
            "bidirectional": True if c["mode"] == "mlm" else None,
            "loss": c["loss"],
            "hxe-alpha": c["hxe_alpha"],
            "soft-labels-beta": c["soft_labels_beta"],
            "hierarchy": c["hierarchy"],
            "tokenizer": c["tokenizer"],
        }
    )
    if c["tokenizer"] in LEARNED_TOKENIZERS:
        args["vocab_size"] = config["data"].get("learned_vocab_size", 256)
    return format_args(args)


def grid_json(wildcards):
    return json.dumps(RUNS[wildcards.run], sort_keys=True)


def task_args(wildcards):
    spec = TASKS[wildcards.task]
    args = {"dataset": spec.get("dataset")} if spec["command"] == "probe" else {}
    args.update(spec.get("args") or {})
    return format_args(args)


def baseline_args(wildcards):
    return f"{task_args(wildcards)} {format_args(config['downstream'].get('baseline_args'))}"


def probe_data(wildcards):
    return raw_path(DATASETS[TASKS[wildcards.task]["dataset"]]["file"])


def annotate_data(wildcards):
    return [raw_path(u["file"]) for u in config["data"]["pretrain"] if u.get("format") == "oas"][:1]


def eval_json(task, run, seed):
    return f"{R}/downstream/{task}/{run}/seed{seed}.json"


def all_evals():
    paths = [eval_json(t, run, s) for t in TASKS for run in task_runs(t) for s in SEEDS]
    paths += [
        eval_json(t, f"baseline-{m}", s)
        for t in tasks_of("probe")
        for m in config["downstream"].get("baselines", [])
        for s in SEEDS
    ]
    return paths


def pretrain_targets():
    return [f"{R}/pretrain/{run}/metrics.json" for run in RUNS]


TABLE_OUTPUTS = {
    "tables": f"{R}/tables.csv",
    "summary": f"{R}/tables/summary.csv",
    "helm_vs_xe": f"{R}/tables/helm_vs_xe.csv",
    "pretrain": f"{R}/tables/pretrain.csv",
    "loss_curves": f"{R}/plots/loss_curves.svg",
    "task_bars": f"{R}/plots/task_bars.svg",
}


def final_targets():
    return list(TABLE_OUTPUTS.values())
