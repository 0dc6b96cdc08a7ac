# Raw data (mirror first, else URL; sha256-checked) -> learned tokenizers -> one prepare job per unit -> merge.


rule fetch:
    input:
        checked_source,  # nothing: stops the workflow when a needed raw file has no source
    output:
        f"{R}/raw/{{rawfile}}",
    params:
        source=fetch_args,
    log:
        f"{R}/logs/fetch/{{rawfile}}.log",
    conda:
        "../../envs/helm.yaml"
    localrule: True
    shell:
        "helm fetch --file {wildcards.rawfile:q} {params.source} --dest {output:q} > {log:q} 2>&1"


rule learn_tokenizer:
    input:
        [raw_path(u["file"]) for u in PRETRAIN_UNITS],
    output:
        directory(f"{R}/tokenizers/{{learned}}"),
    params:
        vocab=LEARNED_VOCAB,
        extra=format_args(config["data"].get("prepare")),
    threads: rule_threads("default", "learn_tokenizer")
    resources:
        **slurm_resources("default", "learn_tokenizer"),
    benchmark:
        f"{R}/benchmarks/data/tokenizers/{{learned}}.tsv"
    log:
        f"{R}/logs/tokenizers/{{learned}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm prepare --input {input:q} --tokenizer {wildcards.learned} --vocab_size {params.vocab}"
        " {params.extra} --threads {threads} --no_progress --output {output:q} > {log:q} 2>&1"


rule prepare_unit:
    input:
        unpack(learned_tokenizer),
        raw=unit_raw,
    output:
        directory(f"{R}/data/{{tokenizer}}/parts/{{unit}}"),
    params:
        extra=unit_args,
        tokenizer=tokenizer_args,
    threads: rule_threads("default", "prepare_unit")
    resources:
        **slurm_resources("default", "prepare_unit"),
    benchmark:
        f"{R}/benchmarks/data/{{tokenizer}}/{{unit}}.tsv"
    log:
        f"{R}/logs/prepare/{{tokenizer}}/{{unit}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm prepare --input {input.raw:q} --tokenizer {wildcards.tokenizer} {params.tokenizer} {params.extra}"
        " --threads {threads} --no_progress --output {output:q} > {log:q} 2>&1"


rule merge_units:
    input:
        expand(f"{R}/data/{{{{tokenizer}}}}/parts/{{unit}}", unit=UNITS),
    output:
        directory(corpus_dir("{tokenizer}")),
    threads: 1
    resources:
        **slurm_resources("default", "merge_units"),
    benchmark:
        f"{R}/benchmarks/data/{{tokenizer}}/merge.tsv"
    log:
        f"{R}/logs/prepare/{{tokenizer}}/merge.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm prepare --merge {input:q} --no_progress --output {output:q} > {log:q} 2>&1"
