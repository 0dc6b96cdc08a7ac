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

from helm.config import TAGS, LossArgs, sections
from helm.report.figures import FIGURES
from helm.report.tables import TABLES
from helm.run import METRICS_FILE
from helm.tokenizers import LEARNED, LEARNED_VOCAB_SIZE
from helm.train import config_values, request_config

REPO = Path(workflow.basedir)
R = config.get("results", "results")
LEARNED_VOCAB = config["data"].get("learned_vocab_size", LEARNED_VOCAB_SIZE)
RUN_METRICS = f"{R}/pretrain/{{run}}/{METRICS_FILE}"  # the file that marks a finished pretrain run (helm/run.py)
REQUEST_FILE = "request.yaml"  # what `helm train --config` of a pretrain job reads, in its run directory


def _workflow_error(message):
    """One line on stderr and exit 2 (a configuration error; snakemake would print a traceback)."""
    print(f"helm workflow: error: {message}", file=sys.stderr)
    sys.exit(2)


def resolve_mirror():
    """data.mirror (relative paths resolve against the repository root); HELM_DATA_MIRROR overrides it."""
    mirror = os.environ.get("HELM_DATA_MIRROR") or config["data"].get("mirror")
    if not mirror:
        return ""
    path = Path(mirror)
    return str(path if path.is_absolute() else (REPO / path).resolve())


MIRROR = resolve_mirror()


def pretrain_units():
    """data.pretrain: a list of units, or the path of a units sheet (TSV: name, url, sha256, format; relative
    paths resolve against the repository root) whose units without sha256 are pinned in `<sheet>.lock`."""
    units = config["data"]["pretrain"]
    if not isinstance(units, str):
        return units, None
    from helm.fetch import read_units

    sheet = Path(units) if Path(units).is_absolute() else REPO / units
    return read_units(sheet), f"{sheet}.lock"


PRETRAIN_UNITS, UNITS_LOCK = pretrain_units()


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
    """run id -> grid coordinates; the union of every block's cartesian product, in config order. A block with a
    `seed` axis (pretraining seeds) adds `-s<seed>` to its run ids; `model` is the id without it."""
    runs = {}
    for block, axes in config["grids"].items():
        for loss in axes["loss"]:
            if loss not in config["losses"]:
                raise ValueError(f"grids.{block}.loss: {loss!r} is not an id under `losses`")
        for arch, mode, size, loss, tok, seed in itertools.product(
            axes["arch"], axes["mode"], axes["size"], axes["loss"], axes["tokenizer"], axes.get("seed") or [None]
        ):
            model = f"{arch}-{mode}-{size}-{loss}-{tok}"
            run = model if seed is None else f"{model}-s{seed}"
            if run in runs:
                runs[run]["grid"] += f"+{block}"
                continue
            spec = config["losses"][loss]
            runs[run] = {
                "run": run,
                "model": model,
                "pretrain_seed": seed,
                "grid": block,
                "arch": arch,
                "mode": mode,
                "size": size,
                "preset": preset_name(arch, mode, size),
                "loss_id": loss,
                "loss": spec["loss"],
                "hxe_alpha": spec.get("hxe_alpha"),
                "soft_labels_beta": spec.get("soft_labels_beta"),
                "hierarchy": spec.get("hierarchy", LossArgs.hierarchy),
                "tokenizer": tok,
            }
    return runs


RUNS = expand_runs()
TOKENIZERS = sorted({c["tokenizer"] for c in RUNS.values()})
UNITS = {u["name"]: u for u in PRETRAIN_UNITS}
UNITS_BY_FILE = {u["file"]: u for u in PRETRAIN_UNITS}
TASKS = config["downstream"]["tasks"]
SEEDS = config["downstream"]["seeds"]


def external_checkpoints():
    """downstream.external -> {run id "hf:<name>": {name, path, args}}: foreign Hugging Face checkpoints that get
    every probe task like a run. Relative paths resolve against the repository root; a folder without config.json
    fails here, before any job runs."""
    out = {}
    for name, entry in (config["downstream"].get("external") or {}).items():
        entry = {"path": entry} if isinstance(entry, str) else entry
        path = Path(entry["path"]).expanduser()
        path = path if path.is_absolute() else (REPO / path).resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"downstream.external.{name}: {entry['path']}: not a Hugging Face model folder "
                             f"(no {path}/config.json)")  # fmt: skip
        out[f"hf:{name}"] = {"name": name, "path": str(path), "args": entry.get("args") or {}}
    return out


EXTERNAL = external_checkpoints()


def _alternation(names):
    return "|".join(re.escape(str(n)) for n in sorted(names, key=lambda n: (-len(str(n)), str(n)))) or "(?!)"


def tasks_of(command):
    return [name for name, task in TASKS.items() if task["command"] == command]


def task_baselines(task):
    """The baselines of a probe task: its own `baselines` list, else downstream.baselines."""
    own = TASKS[task].get("baselines")
    return own if own is not None else config["downstream"].get("baselines", [])


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
RAW_FILES = dict(UNITS_BY_FILE)
RAW_FILES.update(
    {DATASETS[TASKS[t]["dataset"]]["file"]: DATASETS[TASKS[t]["dataset"]] for t in tasks_of("probe")}
)


wildcard_constraints:
    run=_alternation([*RUNS, *EXTERNAL]),
    unit=_alternation(UNITS),
    tokenizer=_alternation(TOKENIZERS),
    learned=_alternation(LEARNED),
    rawfile=_alternation(RAW_FILES),
    task=_alternation(TASKS),
    seed=r"\d+",
    method=_alternation({m for t in tasks_of("probe") for m in task_baselines(t)}),


def resources(kind, key, default=None):
    return config["resources"][kind].get(key, default)


def gres(model, count):
    """A Slurm GPU gres (per node): gpu:<count> or gpu:<model>:<count>."""
    return ":".join(["gpu", *([model] if model else []), str(count)])


def pretrain_ranks():
    """(processes per node, nodes) of a pretrain job: resources.pretrain.tasks_per_node (default: its GPUs, at
    least 1) and nodes (default 1)."""
    per_node = resources("pretrain", "tasks_per_node") or max(resources("pretrain", "gpu") or 0, 1)
    return per_node, resources("pretrain", "nodes") or 1


def slurm_resources(kind, rule):
    """The resources of one rule's jobs (class `kind`, resources.rules.<rule> over it; workflow/rules/resources.smk),
    as rules declare them (the slurm plugin reads these names)."""
    res = sized_resources(kind, rule)
    per_node, nodes = pretrain_ranks() if kind == "pretrain" else (1, 1)
    if per_node * nodes > 1:
        # one Slurm task per DDP rank: the plugin's "mpi" path runs the rule's shell once in the allocation, whose
        # own `srun` then starts every rank (Lightning's SLURMEnvironment reads them); sbatch --ntasks-per-node
        res["mpi"] = "srun"
        res.update({"tasks_per_node": per_node} if per_node > 1 else {"tasks": nodes})
        if nodes > 1:
            res["nodes"] = nodes
            if res["gpu"]:  # --gpus counts the whole job: per node it is a gres
                res["gres"] = gres(res.pop("gpu_model", None), res.pop("gpu"))
    return res


def launcher(wildcards):
    """What starts `helm train`: inside a multi-rank Slurm job an `srun` with the job's task geometry (the jobstep
    plugin strips the SLURM_* task variables, so srun is told the tasks, CPUs and GPUs again), else nothing
    (locally Lightning starts its own DDP processes)."""
    per_node, nodes = pretrain_ranks()
    if per_node * nodes == 1:
        return ""
    flags = [f"--nodes={nodes}", f"--ntasks-per-node={per_node}", f"--ntasks={per_node * nodes}",
             f"--cpus-per-task={rule_threads('pretrain', 'pretrain')}"]  # fmt: skip
    if resources("pretrain", "gpu"):  # every rank sees the node's GPUs; Lightning picks cuda:<local rank>
        flags.append(f"--gres={gres(resources('pretrain', 'gpu_model'), resources('pretrain', 'gpu'))}")
    return f'$([ -n "${{SLURM_JOB_ID:-}}" ] && echo srun {" ".join(flags)}) '


def fetch_args(wildcards):
    """`helm fetch` flags of one raw file: url, sha256 (or, for a sheet's unpinned units, the lock file), mirror."""
    entry = RAW_FILES[wildcards.rawfile]
    lock = UNITS_LOCK if not entry.get("sha256") and wildcards.rawfile in UNITS_BY_FILE else None
    return format_args({"url": entry.get("url"), "sha256": entry.get("sha256"), "lock": lock, "mirror": MIRROR or None})


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
    if wildcards.tokenizer in LEARNED:
        return {"tokenizer": f"{R}/tokenizers/{wildcards.tokenizer}"}
    return {}


def tokenizer_args(wildcards, input):
    if wildcards.tokenizer in LEARNED:
        return f"--tokenizer_file {input.tokenizer}/tokenizer.json"
    return ""


def corpus_dir(tokenizer):
    """The merged prepared corpus of a tokenizer (written by merge_units; the aa one by reference_corpus)."""
    return f"{R}/data/{tokenizer}/corpus"


def run_corpus(wildcards):
    """The prepared corpus of a run (its test split is the held-out reference of generate / cluster)."""
    gpu_guard()
    return corpus_dir(RUNS[wildcards.run]["tokenizer"])


def training_settings(layer, where):
    """One layer of training settings from the config as typed {flag: value} (null: left out, helm's default),
    read by helm's own --config reader: a bad key or value stops the DAG (dry runs too) with one line naming it."""
    try:
        return config_values({k: v for k, v in (layer or {}).items() if v is not None}, where)
    except ValueError as e:
        _workflow_error(str(e))


def checked_request(values, where):
    """{flag: value} (+ tags) -> the request a `helm train --config` reads, in the config tree's sections, after
    helm has built its TrainConfig from it (every value and cross-setting check; one line on a bad one)."""
    document = sections(values)
    try:
        request_config(document, where)
    except ValueError as e:
        _workflow_error(str(e))
    return document


# pretrain.args over the schema's checkpoint interval (a resumable last.ckpt while a job runs), then arch_args
PRETRAIN_SETTINGS = training_settings(
    {"checkpoint_every_n_steps": config["pretrain"]["checkpoint_every_n_steps"], **(config["pretrain"].get("args") or {})},
    "pretrain.args",
)
ARCH_SETTINGS = {arch: training_settings(args, f"pretrain.arch_args.{arch}")
                 for arch, args in (config["pretrain"].get("arch_args") or {}).items()}  # fmt: skip


def grid_point_settings(c):
    """What a grid point sets over pretrain.args and arch_args: preset, mode, loss, tokenizer, its seed, DDP."""
    settings = {"preset": c["preset"], "mode": c["mode"], "bidirectional": True if c["mode"] == "mlm" else None,
                "loss": c["loss"], "hxe_alpha": c["hxe_alpha"], "soft_labels_beta": c["soft_labels_beta"],
                "hierarchy": c["hierarchy"], "tokenizer": c["tokenizer"],
                "seed": c["pretrain_seed"]}  # fmt: skip  (seed null: pretrain.args' seed or helm's default)
    per_node, nodes = pretrain_ranks()
    if per_node * nodes > 1:  # DDP: batch_size stays per rank, the global batch is batch_size x ranks x accum
        settings.update({"num_devices": per_node, "num_nodes": nodes, "distributed_backend": "ddp"})
    if c["tokenizer"] in LEARNED:
        settings["vocab_size"] = LEARNED_VOCAB
    return settings


def pretrain_request(run):
    """The request of one pretrain run: its corpus and run directory, pretrain.args < arch_args < the grid point,
    and its grid coordinates as `tags` (helm copies them into the run's config.yaml; helm/report reads them)."""
    c = RUNS[run]
    where = f"pretrain run {run}"
    values = {**PRETRAIN_SETTINGS, **ARCH_SETTINGS.get(c["arch"], {}), **training_settings(grid_point_settings(c), where),
              "data_dir": corpus_dir(c["tokenizer"]), "output": f"{R}/pretrain/{run}", TAGS: c}  # fmt: skip
    return checked_request(values, where)


# training job (its run directory under results/) -> its request; generate_common.smk adds the reference encoder
REQUESTS = {f"pretrain/{run}": pretrain_request(run) for run in RUNS}


def request_yaml(trainee):
    """The request of a training job (`REQUESTS` key: its run directory under results/) as the YAML text that the
    job itself writes into its run directory before `helm train --config` reads it (workflow/rules/pretrain.smk)."""
    head = "# written by this run's workflow job (workflow/rules/pretrain.smk); helm train --config reads it\n"
    return head + yaml.safe_dump(REQUESTS[trainee], sort_keys=False)


def request_file(trainee):
    return f"{R}/{trainee}/{REQUEST_FILE}"


def task_args(wildcards):
    spec = TASKS[wildcards.task]
    args = {"dataset": spec.get("dataset")} if spec["command"] == "probe" else {}
    args.update(spec.get("args") or {})
    return format_args(args)


def baseline_args(wildcards):
    return f"{task_args(wildcards)} {format_args(config['downstream'].get('baseline_args'))}"


def probe_data(wildcards):
    return raw_path(DATASETS[TASKS[wildcards.task]["dataset"]]["file"])


def _task_arg(task, name):
    args = TASKS[task].get("args") or {}
    return args.get(name, args.get(name.replace("-", "_")))


def frozen(task):
    """A probe task on frozen embeddings reads them from the shared features file of its (run, dataset)."""
    return (_task_arg(task, "finetune") or "none") == "none"


def features_key(task):
    """Tasks on the same dataset rows share one features file per run: `<dataset>` or `<dataset>-rows<N>`."""
    rows = _task_arg(task, "max-rows")
    return TASKS[task]["dataset"] + (f"-rows{rows}" if rows else "")


FEATURE_SETS = {features_key(t): t for t in tasks_of("probe") if frozen(t)}  # key -> one task that names it


def features_file(run, key):
    return f"{R}/embeddings/{key}/{run}.safetensors"


def run_input(wildcards):
    """The file a job waits for: a pretrain run's metrics.json, or an external checkpoint's config.json."""
    gpu_guard()
    ext = EXTERNAL.get(wildcards.run)
    return f"{ext['path']}/config.json" if ext else RUN_METRICS.format(run=wildcards.run)


def run_source(wildcards, input):
    """`--run RUN_DIR`, or `--hf DIR --hf-name NAME` and the external checkpoint's own flags."""
    ext = EXTERNAL.get(wildcards.run)
    if ext:
        hf = f"--hf {shlex.quote(ext['path'])} --hf-name {shlex.quote(ext['name'])}"
        return f"{hf} {format_args(ext['args'])}".rstrip()
    return f"--run {shlex.quote(os.path.dirname(input.run))}"


def probe_inputs(wildcards):
    """A frozen probe reads the run's features of its dataset (embedded once); fine-tuning needs the run."""
    inputs = {"data": probe_data(wildcards), "run": run_input(wildcards)}
    if frozen(wildcards.task):
        inputs["features"] = features_file(wildcards.run, features_key(wildcards.task))
    return inputs


def probe_source(wildcards, input):
    if frozen(wildcards.task):
        return f"--features {shlex.quote(input.features)}"
    return run_source(wildcards, input)


def embed_args(wildcards):
    task = FEATURE_SETS[wildcards.key]
    return format_args({"dataset": TASKS[task]["dataset"], "max-rows": _task_arg(task, "max-rows"),
                        **(config["downstream"].get("embed_args") or {})})  # fmt: skip


def embed_data(wildcards):
    return raw_path(DATASETS[TASKS[FEATURE_SETS[wildcards.key]]["dataset"]]["file"])


def annotate_data(wildcards):
    return [raw_path(u["file"]) for u in PRETRAIN_UNITS if u.get("format") == "oas"][:1]


def eval_json(task, run, seed):
    return f"{R}/downstream/{task}/{run}/seed{seed}.json"


def all_evals():
    paths = [eval_json(t, run, s) for t in TASKS for run in task_runs(t) for s in SEEDS]
    paths += [eval_json(t, f"baseline-{m}", s) for t in tasks_of("probe") for m in task_baselines(t) for s in SEEDS]
    paths += [eval_json(t, run, s) for t in tasks_of("probe") for run in EXTERNAL for s in SEEDS]
    return paths



def pretrain_targets():
    return [RUN_METRICS.format(run=run) for run in RUNS]


REPORT = config.get("report") or {}
ARTIFACT = REPORT.get("artifact")  # a folder that gets a copy of the tables and figures (a committed study)


def table_outputs():
    """Named outputs of the tables rule, each shown in the report with its caption (workflow/report/)."""
    out = {}
    for name in TABLES:
        out[name] = report(f"{R}/tables/{name}.csv", caption=f"../report/table_{name}.rst", category="Tables")
        out[f"{name}_md"] = f"{R}/tables/{name}.md"
    for name in FIGURES:
        caption = f"../report/figure_{name}.rst"
        out[f"{name}_png"] = report(f"{R}/plots/{name}.png", caption=caption, category="Figures")
        out[f"{name}_svg"] = f"{R}/plots/{name}.svg"
    return out


def published_file():
    path = REPORT.get("published")
    return str(REPO / path) if path and not Path(path).is_absolute() else (path or "")


def artifact_targets():
    if not ARTIFACT:
        return []
    return [f"{ARTIFACT}/{name}" for name in ("tables.csv", "config.yaml", "versions.txt", "machine.json",
                                              "stage_times.csv")]  # fmt: skip


def final_targets():
    return [f"{R}/tables.csv", *artifact_targets()]
