# mRNA design rules (optional, config `design`); the helpers and checks are in design_common.smk.

rule design:
    input:
        run=RUN_METRICS,
        fasta=design_fasta,
    output:
        f"{R}/design/{{run}}/{{protein_set}}/designs.json",
    wildcard_constraints:
        protein_set=_alternation(DESIGN_SETS),
    params:
        args=lambda w: format_args(DESIGN.get("args")),
        rundir=lambda w, input: os.path.dirname(input.run),
        out=lambda w, output: os.path.dirname(output[0]),
    threads: rule_threads("downstream", "design")
    resources:
        **slurm_resources("downstream", "design"),
    log:
        f"{R}/logs/design/{{run}}/{{protein_set}}.log",
    conda:
        "../../envs/helm.yaml"
    shell:
        "helm design --run {params.rundir:q} --fasta {input.fasta:q} --out {params.out:q} --overwrite"
        " --threads {threads} {params.args} > {log:q} 2>&1"


rule design_table:
    input:
        expand(f"{R}/design/{{run}}/{{protein_set}}/designs.json", run=design_runs(), protein_set=DESIGN_SETS),
    output:
        table=report(f"{R}/tables/design.csv", caption="../report/table_design.rst", category="Design"),
        md=f"{R}/tables/design.md",
    params:
        out=lambda w, output: os.path.dirname(output.table),
    log:
        f"{R}/logs/design_table.log",
    conda:
        "../../envs/helm.yaml"
    localrule: True
    shell:
        "helm design-bench --gather {input:q} --out {params.out:q} > {log:q} 2>&1"
