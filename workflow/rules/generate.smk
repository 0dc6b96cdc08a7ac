# Generation (CLM runs): sample sequences and score them (validity, GC, codon usage, diversity, Frechet distance).
#
# Every generate job embeds with the same embedder, so Fréchet distances and precision/recall of two runs are
# comparable: `generation.esm` (a local ESM-2 checkpoint) when configured, else one protein-level reference
# encoder trained once here (an `aa` MLM on the translated pretraining units: reference_unit ->
# reference_corpus -> reference_encoder). The JSONs name the embedder in the metric names
# (`frechet_distance@esm:<checkpoint>` / `frechet_distance@run:reference_encoder`).


include: "generate_common.smk"


rule reference_unit:
    input:
        raw=unit_raw,
    output:
        directory(f"{R}/data/aa/parts/{{unit}}"),
    params:
        extra=reference_unit_args,
    threads: rule_threads("default", "reference_unit")
    resources:
        **slurm_resources("default", "reference_unit"),
    log:
        f"{R}/logs/prepare/aa/{{unit}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm prepare --input {input.raw:q} --tokenizer aa {params.extra} --threads {threads} --no_progress"
        " --output {output:q} > {log:q} 2>&1"


rule reference_corpus:
    input:
        expand(f"{R}/data/aa/parts/{{unit}}", unit=UNITS),
    output:
        directory(corpus_dir("aa")),
    threads: 1
    resources:
        **slurm_resources("default", "reference_corpus"),
    log:
        f"{R}/logs/prepare/aa/merge.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm prepare --merge {input:q} --no_progress --output {output:q} > {log:q} 2>&1"


rule reference_encoder:
    input:
        corpus=corpus_dir("aa"),
    output:
        metrics=f"{REFERENCE_ENCODER}/{METRICS_FILE}",
    params:
        request=request_yaml(REFERENCE_TRAINEE),
        file=request_file(REFERENCE_TRAINEE),
    threads: rule_threads("pretrain", "reference_encoder")
    resources:
        **slurm_resources("pretrain", "reference_encoder"),
    benchmark:
        f"{R}/benchmarks/reference_encoder.tsv"
    log:
        f"{R}/logs/reference_encoder.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "printf '%s' {params.request:q} > {params.file:q} && helm train --config {params.file:q} >> {log:q} 2>&1"


rule generate:
    input:
        unpack(generation_embedder),
        run=RUN_METRICS,
        reference=run_corpus,
    output:
        f"{R}/downstream/{{task}}/{{run}}/seed{{seed}}.json",
    wildcard_constraints:
        task=_alternation(tasks_of("generate")),
    params:
        args=task_args,
        embedder=embedder_args,
        rundir=lambda w, input: os.path.dirname(input.run),
    threads: rule_threads("downstream", "generate")
    resources:
        **slurm_resources("downstream", "generate"),
    benchmark:
        f"{R}/benchmarks/downstream/{{task}}/{{run}}/seed{{seed}}.tsv"
    log:
        f"{R}/logs/downstream/{{task}}/{{run}}/seed{{seed}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm generate --run {params.rundir:q} --reference {input.reference:q} --seed {wildcards.seed} {params.args}"
        " {params.embedder} --out {output:q} > {log:q} 2>&1"
