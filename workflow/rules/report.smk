# Tables (results/tables.csv + pivots) and the plots that `snakemake --report` embeds.


rule tables:
    input:
        evals=all_evals(),
        runs=pretrain_targets(),
    output:
        tables=report(TABLE_OUTPUTS["tables"], caption="../report/tables.rst", category="Tables"),
        summary=report(TABLE_OUTPUTS["summary"], caption="../report/summary.rst", category="Tables"),
        helm_vs_xe=report(TABLE_OUTPUTS["helm_vs_xe"], caption="../report/helm_vs_xe.rst", category="Tables"),
        pretrain=report(TABLE_OUTPUTS["pretrain"], caption="../report/pretrain.rst", category="Tables"),
        loss_curves=report(TABLE_OUTPUTS["loss_curves"], caption="../report/loss_curves.rst", category="Plots"),
        task_bars=report(TABLE_OUTPUTS["task_bars"], caption="../report/task_bars.rst", category="Plots"),
    params:
        results=lambda w, output: os.path.dirname(output.tables),
    log:
        f"{R}/logs/tables.log",
    conda:
        "../../envs/helm.yaml"
    localrule: True
    shell:
        "helm tables --results {params.results:q} --runs {input.runs:q} --evals {input.evals:q}"
        " --out {output.tables:q} --summary {output.summary:q} --helm-vs-xe {output.helm_vs_xe:q}"
        " --pretrain-table {output.pretrain:q} --loss-curves {output.loss_curves:q}"
        " --task-bars {output.task_bars:q} > {log:q} 2>&1"
