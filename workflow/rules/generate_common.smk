# Input functions and config checks of workflow/rules/generate.smk (no rules here): the one embedder of every
# generate job (generation.esm, else the reference encoder) and the reference encoder's request.

GENERATION = config.get("generation") or {}
REFERENCE_ENCODER = f"{R}/reference_encoder"  # its run directory
# fixed by the workflow: a protein MLM trained with plain cross entropy (the codon hierarchies do not apply)
REFERENCE_FIXED = {"data_type": "aa", "mode": "mlm", "bidirectional": True, "loss": "XE"}
REFERENCE_DEFAULTS = {"preset": "bert-25m"}


def reference_encoder_args():
    return (GENERATION.get("reference_encoder") or {}).get("args") or {}


def _generation_esm():
    """generation.esm as an absolute path ("" = not configured); relative paths resolve against the repository
    root, like data.mirror. A checkpoint that is not there fails here, before any job runs."""
    esm = GENERATION.get("esm")
    if not esm:
        return ""
    path = Path(esm).expanduser()
    path = path if path.is_absolute() else (REPO / path).resolve()
    if not (path / "config.json").is_file():
        raise ValueError(f"generation.esm: {esm}: not a Hugging Face checkpoint directory (no {path}/config.json)")
    return str(path)


def _check_generation_config():
    """The embedder is chosen once for every job: a task's own --esm/--embed-run would undo that."""
    for task in tasks_of("generate"):
        for key in TASKS[task].get("args") or {}:
            if key.replace("_", "-") in ("esm", "embed-run"):
                raise ValueError(
                    f"downstream.tasks.{task}.args.{key}: the embedder of every generate job is set by "
                    "generation.esm (else the shared reference encoder), not per task"
                )
    for key in reference_encoder_args():
        if key.replace("-", "_") in (*REFERENCE_FIXED, "output", "data_dir"):
            raise ValueError(f"generation.reference_encoder.args.{key}: set by the workflow (an aa MLM with XE)")


GENERATION_ESM = _generation_esm()
_check_generation_config()


def generation_embedder(wildcards):
    """What every generate job embeds with: the ESM checkpoint, or the reference encoder's finished run."""
    if GENERATION_ESM:
        return {"embedder": f"{GENERATION_ESM}/config.json"}
    return {"embedder": f"{REFERENCE_ENCODER}/{METRICS_FILE}"}


def embedder_args(wildcards, input):
    if GENERATION_ESM:
        return f"--esm {shlex.quote(GENERATION_ESM)}"
    return f"--embed-run {shlex.quote(os.path.dirname(input.embedder))}"


def reference_unit_args(wildcards):
    """The unit's own prepare flags (format, orf, data.prepare), its nucleotide CDSs translated to protein."""
    return f"{unit_args(wildcards)} --translate"


def reference_request():
    """The reference encoder's `helm train --config` request: bert-25m unless its args name a preset, its args,
    the fixed protein-MLM settings, the merged aa corpus (checked by helm now, like every pretrain request)."""
    where = "generation.reference_encoder.args"
    values = {**training_settings({**REFERENCE_DEFAULTS, **reference_encoder_args()}, where), **REFERENCE_FIXED,
              "data_dir": corpus_dir("aa"), "output": REFERENCE_ENCODER}  # fmt: skip
    return checked_request(values, where)


REFERENCE_TRAINEE = "reference_encoder"  # its key in REQUESTS: REFERENCE_ENCODER under results/
REQUESTS[REFERENCE_TRAINEE] = reference_request()
