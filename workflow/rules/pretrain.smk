# One pretrain job per grid point. The run directory resumes from checkpoints/last.ckpt after a kill, and only
# metrics.json / grid.json are declared outputs, so snakemake never deletes checkpoints of an unfinished run.
# Snakemake exports OMP_NUM_THREADS (and the BLAS equivalents) = the job's threads to every shell command, so
# two jobs on two cores never oversubscribe them. A run with several ranks (resources.pretrain tasks_per_node /
# nodes) is one Slurm job with one task per rank, started by the `srun` of params.launcher.


rule pretrain:
    input:
        corpus=run_corpus,
    output:
        metrics=f"{R}/pretrain/{{run}}/metrics.json",
        grid=f"{R}/pretrain/{{run}}/grid.json",
    params:
        args=train_args,
        grid=grid_json,
        rundir=lambda w, output: os.path.dirname(output.metrics),
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
        "{params.launcher}helm train --data_dir {input.corpus:q} {params.args} --output {params.rundir:q} >> {log:q} 2>&1"
        " && echo {params.grid:q} > {output.grid:q}"
