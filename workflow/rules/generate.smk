# Generation (CLM runs): sample sequences and score them (validity, GC, codon usage, diversity, Frechet distance).


rule generate:
    input:
        run=f"{R}/pretrain/{{run}}/metrics.json",
        reference=run_corpus,
    output:
        f"{R}/downstream/{{task}}/{{run}}/seed{{seed}}.json",
    wildcard_constraints:
        task=_alternation(tasks_of("generate")),
    params:
        args=task_args,
        rundir=lambda w, input: os.path.dirname(input.run),
    threads: resources("downstream", "threads")
    resources:
        **slurm_resources("downstream"),
    benchmark:
        f"{R}/benchmarks/downstream/{{task}}/{{run}}/seed{{seed}}.tsv"
    log:
        f"{R}/logs/downstream/{{task}}/{{run}}/seed{{seed}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm generate --run {params.rundir:q} --reference {input.reference:q} --seed {wildcards.seed} {params.args}"
        " --out {output:q} > {log:q} 2>&1"
