# Downstream evaluations: (pretrain run, external checkpoint or baseline) x task x seed, one JSON each.


rule embed:
    input:
        run=run_input,  # a pretrain run, or an external checkpoint's config.json (downstream.external)
        data=embed_data,
    output:
        features_file("{run}", "{key}"),
    wildcard_constraints:
        key=_alternation(FEATURE_SETS),
    params:
        args=embed_args,
        source=run_source,
    threads: rule_threads("downstream", "embed")
    resources:
        **slurm_resources("downstream", "embed"),
    benchmark:
        f"{R}/benchmarks/embed/{{key}}/{{run}}.tsv"
    log:
        f"{R}/logs/embed/{{key}}/{{run}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm embed {params.source} --data-file {input.data:q} --threads {threads} --quiet {params.args}"
        " --out {output:q} > {log:q} 2>&1"


rule probe:
    input:
        unpack(probe_inputs),
    output:
        f"{R}/downstream/{{task}}/{{run}}/seed{{seed}}.json",
    wildcard_constraints:
        task=_alternation(tasks_of("probe")),
    params:
        args=task_args,
        source=probe_source,
    threads: probe_threads
    resources:
        **probe_resources(),
    benchmark:
        f"{R}/benchmarks/downstream/{{task}}/{{run}}/seed{{seed}}.tsv"
    log:
        f"{R}/logs/downstream/{{task}}/{{run}}/seed{{seed}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm probe {params.source} --data-file {input.data:q} --seed {wildcards.seed} --threads {threads}"
        " {params.args}"
        " --out {output:q} > {log:q} 2>&1"


rule annotate:
    input:
        run=RUN_METRICS,
        data=annotate_data,
        corpus=run_corpus,  # rows in its training split are skipped: annotation is scored on held-out rows
    output:
        f"{R}/downstream/{{task}}/{{run}}/seed{{seed}}.json",
    wildcard_constraints:
        task=_alternation(tasks_of("annotate")),
    params:
        args=task_args,
        rundir=lambda w, input: os.path.dirname(input.run),
    threads: rule_threads("downstream", "annotate")
    resources:
        **slurm_resources("downstream", "annotate"),
    benchmark:
        f"{R}/benchmarks/downstream/{{task}}/{{run}}/seed{{seed}}.tsv"
    log:
        f"{R}/logs/downstream/{{task}}/{{run}}/seed{{seed}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm annotate --run {params.rundir:q} --data {input.data:q} --corpus {input.corpus:q}"
        " --seed {wildcards.seed} --quiet {params.args}"
        " --out {output:q} > {log:q} 2>&1"


rule cluster:
    input:
        run=RUN_METRICS,
        reference=run_corpus,
    output:
        f"{R}/downstream/{{task}}/{{run}}/seed{{seed}}.json",
    wildcard_constraints:
        task=_alternation(tasks_of("cluster")),
    params:
        args=task_args,
        rundir=lambda w, input: os.path.dirname(input.run),
    threads: rule_threads("downstream", "cluster")
    resources:
        **slurm_resources("downstream", "cluster"),
    benchmark:
        f"{R}/benchmarks/downstream/{{task}}/{{run}}/seed{{seed}}.tsv"
    log:
        f"{R}/logs/downstream/{{task}}/{{run}}/seed{{seed}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm cluster --run {params.rundir:q} --reference {input.reference:q} --seed {wildcards.seed} {params.args}"
        " --out {output:q} > {log:q} 2>&1"


rule baseline:
    input:
        data=probe_data,
    output:
        f"{R}/downstream/{{task}}/baseline-{{method}}/seed{{seed}}.json",
    wildcard_constraints:
        task=_alternation(tasks_of("probe")),
    params:
        args=baseline_args,
    threads: rule_threads("default", "baseline")
    resources:
        **slurm_resources("default", "baseline"),
    benchmark:
        f"{R}/benchmarks/downstream/{{task}}/baseline-{{method}}/seed{{seed}}.tsv"
    log:
        f"{R}/logs/downstream/{{task}}/baseline-{{method}}/seed{{seed}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm baseline --kind {wildcards.method} --data-file {input.data:q} --seed {wildcards.seed} {params.args}"
        " --out {output:q} > {log:q} 2>&1"
