# One pretrain job per grid point. Its settings reach `helm train` as one request file in the run directory:
# request.yaml, the config tree's sections plus `tags` (the grid coordinates, which helm copies into the run's
# config.yaml for the report), built and checked by helm's own config loader when the DAG is built
# (common.smk REQUESTS) and written by the job itself, so a rerun always trains with the config of today.
# The run directory resumes from checkpoints/last.ckpt after a kill, and only metrics.json is a declared output,
# so snakemake never deletes checkpoints of an unfinished run. Snakemake exports OMP_NUM_THREADS (and the BLAS
# equivalents) = the job's threads to every shell command, so two jobs on two cores never oversubscribe them. A
# run with several ranks (resources.pretrain tasks_per_node / nodes) is one Slurm job with one task per rank,
# started by the `srun` of params.launcher.


rule pretrain:
    input:
        corpus=run_corpus,
    output:
        metrics=RUN_METRICS,
    params:
        request=lambda w: request_yaml(f"pretrain/{w.run}"),
        file=lambda w: request_file(f"pretrain/{w.run}"),
        launcher=launcher,
    threads: rule_threads("pretrain", "pretrain")
    resources:
        **slurm_resources("pretrain", "pretrain"),
    benchmark:
        f"{R}/benchmarks/pretrain/{{run}}.tsv"
    log:
        f"{R}/logs/pretrain/{{run}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "printf '%s' {params.request:q} > {params.file:q}"
        " && {params.launcher}helm train --config {params.file:q} >> {log:q} 2>&1"
