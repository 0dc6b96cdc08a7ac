# Tables (results/tables.csv, results/tables/*), figures (results/plots/*) for `snakemake --report`, and, when
# report.artifact is set, a committed copy of them with the run's context (a study's docs/results/ folder).


rule tables:
    input:
        evals=all_evals(),
        runs=pretrain_targets(),
    output:
        tables=report(f"{R}/tables.csv", caption="../report/tables.rst", category="Tables"),
        **table_outputs(),
    params:
        results=lambda w, output: os.path.dirname(output.tables),
        published=lambda w: f"--published {shlex.quote(published_file())}" if published_file() else "",
        replicates=REPORT.get("replicates", 2000),
    log:
        f"{R}/logs/tables.log",
    conda:
        "../../envs/helm.yaml"
    localrule: True
    shell:
        "helm tables --results {params.results:q} --runs {input.runs:q} --evals {input.evals:q}"
        " --out {output.tables:q} --tables-dir {params.results:q}/tables --plots-dir {params.results:q}/plots"
        " --replicates {params.replicates} {params.published} > {log:q} 2>&1"


if ARTIFACT:

    rule artifact:
        input:
            rules.tables.output,
        output:
            artifact_targets(),
        params:
            results=lambda w, input: os.path.dirname(input[0]),  # the tables rule's first output: tables.csv
            artifact=lambda w, output: os.path.dirname(output[0]),
            config=lambda w: json.dumps(config, sort_keys=True),
        log:
            f"{R}/logs/artifact.log",
        conda:
            "../../envs/helm.yaml"
        localrule: True
        shell:
            "helm tables --results {params.results:q} --artifact {params.artifact:q} --workflow-config {params.config:q}"
            " > {log:q} 2>&1"
