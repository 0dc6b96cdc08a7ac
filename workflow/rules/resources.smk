# Checks made while the DAG is built (dry runs included) and the resources of every job (no rules here):
# - every raw file a needed job reads has a source (already fetched, in the mirror, or a url);
# - GPU jobs run locally only where the machine's GPUs are declared (--resources gpu=N);
# - per-rule sizes (resources.rules) over the three classes, CPU heads (ridge, linear) as CPU jobs, and a job
#   that fails (e.g. at its time or memory limit) retried with twice the memory and time (Snakemake's attempt).
# - a bare local `snakemake <target>` (no --cores, --jobs or profile) runs on this machine's cores.
# Sizes, formulas and measurements: docs/ARCHITECTURE.md ("Resources").
import os

from helm.fetch import find_in_mirror

CPU_HEADS = ("ridge", "linear")  # closed-form or one linear layer on pooled features: no GPU needed


def local_cores_default():
    """A bare local `snakemake <target>` (no --cores, --jobs or profile) would stop at Snakemake's own "cores have to
    be specified": give it this machine's cores (`--cores all`). Only there: with --jobs (the site profile's
    `jobs`, `--profile slurm`) cores stay unset, since cores cap every cluster job's threads at the count of the
    machine that submits them (which is why no profile of this workflow sets them)."""
    settings = workflow.resource_settings
    if workflow.is_main_process and settings.cores is None and settings.nodes is None:
        settings.cores = os.cpu_count() or 1
        workflow.global_resources["_cores"] = settings.cores


def _raw_users():
    """raw file -> what needs it (a pretraining unit, or the probe tasks of a dataset)."""
    users = {u["file"]: f"data.pretrain unit {u['name']}" for u in PRETRAIN_UNITS}
    for task in tasks_of("probe"):
        dataset = DATASETS[TASKS[task]["dataset"]]
        users.setdefault(dataset["file"], f"dataset {TASKS[task]['dataset']} of task")
        users[dataset["file"]] += f" {task}"
    return users


def has_source(relpath):
    """Fetched already, held by the mirror, or downloadable (a url)."""
    return bool(os.path.exists(raw_path(relpath)) or RAW_FILES[relpath].get("url") or find_in_mirror(relpath, MIRROR))


def sourceless():
    return [f for f in RAW_FILES if not has_source(f)]


def checked_source(wildcards):
    """Input function of `fetch`: a raw file the targets need without a source stops the workflow before any job
    is submitted, naming every sourceless file of the config and the fix."""
    if has_source(wildcards.rawfile):
        return []
    users = _raw_users()
    listing = "; ".join(f"{f} ({users.get(f, '?')})" for f in sourceless())
    where = f"mirror {MIRROR}" if MIRROR else "no data.mirror / HELM_DATA_MIRROR set"
    _workflow_error(
        f"no source for {listing} [{where}]. Fix: set data.mirror (or HELM_DATA_MIRROR) to a folder holding "
        "them, give them a url (a units sheet: `helm fetch --units-from bulk_download.sh --dest "
        "config/oas_units.tsv`, then data.pretrain: config/oas_units.tsv), or drop the tasks that read them "
        "(README, 'The paper grid on a cluster')"
    )


_GPU_CHECKED = []


def gpu_guard():
    """A local run (not a dry run) of GPU jobs needs the machine's GPUs declared, else Snakemake would start every
    GPU job at once on whatever there is: say so in one line instead (the paper grid on a laptop)."""
    # only the submitting process decides (a job's own snakemake, e.g. inside a Slurm job, runs it as told)
    if _GPU_CHECKED or not workflow.is_main_process or workflow.dryrun or workflow.touch or not workflow.local_exec:
        return
    _GPU_CHECKED.append(True)
    downstream = [("downstream", r) for r in ("embed", "annotate", "cluster", "generate")]
    gpu_rules = [("pretrain", "pretrain"), *downstream, *(probe_kind(t) for t in tasks_of("probe"))]
    if any(job_size(*kr)["gpu"] for kr in gpu_rules) and "gpu" not in workflow.global_resources:
        _workflow_error(
            "these jobs ask for GPUs (config resources: gpu > 0) but this local run declares none: on Slurm run "
            "`snakemake --profile slurm`; on a GPU machine add `--resources gpu=N` (or "
            "`--profile workflow/profiles/default`); on a laptop use `--configfile config/smoke.yaml`"
        )


def probe_kind(task):
    """(class, rules key) of a probe task: a CPU head is a CPU job ('probe_cpu' over the default class)."""
    head = _task_arg(task, "head") or "textcnn"
    return ("default", "probe_cpu") if head in CPU_HEADS else ("downstream", "probe")


def job_size(kind, rule):
    """resources.<kind>, then resources.rules.<rule> over it (measured per-rule sizes)."""
    return {**config["resources"][kind], **((config["resources"].get("rules") or {}).get(rule) or {})}


def _doubled(value):
    """A limit that doubles on each retry: a job killed at its time or memory limit gets twice as much."""
    return lambda wildcards, attempt: value * 2 ** (attempt - 1)


def sized_resources(kind, rule):
    """The resources of one rule's jobs as Snakemake and the slurm plugin read them."""
    size = job_size(kind, rule)
    res = {"mem_mb": _doubled(size["mem_mb"]), "runtime": _doubled(size["runtime"]), "gpu": size["gpu"]}
    for key in ("gpu_model", "slurm_partition", "slurm_extra"):
        if size.get(key):
            res[key] = size[key]
    return res


def rule_threads(kind, rule):
    return job_size(kind, rule)["threads"]


def probe_resources():
    """Per-task resources of the probe rule (its head decides GPU or CPU job); string resources the two kinds do
    not share are given as '' (unset for the slurm plugin)."""
    sizes = {t: job_size(*probe_kind(t)) for t in tasks_of("probe")}
    keys = {k for s in sizes.values() for k in ("gpu_model", "slurm_partition", "slurm_extra") if s.get(k)}

    def per_task(key, double=False):
        return lambda wildcards, attempt: (
            sizes[wildcards.task][key] * 2 ** (attempt - 1) if double else sizes[wildcards.task].get(key) or ""
        )

    res = {"mem_mb": per_task("mem_mb", True), "runtime": per_task("runtime", True)}
    res["gpu"] = lambda wildcards: sizes[wildcards.task]["gpu"]
    res.update({k: per_task(k) for k in sorted(keys)})
    return res


def probe_threads(wildcards):
    return job_size(*probe_kind(wildcards.task))["threads"]


local_cores_default()
