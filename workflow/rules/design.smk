# mRNA design (optional, config `design`): `helm design` for every protein set with each selected codon run, and
# one table of every design's scores (results/tables/design.csv) in the report. See docs/ARCHITECTURE.md ("Design").

DESIGN = config.get("design") or {}
DESIGN_SETS = DESIGN.get("protein_sets") or {}


def design_runs():
    """Codon (3mer) runs of the grids named by design.grids (default: every grid)."""
    blocks = set(DESIGN.get("grids") or config["grids"])
    return [run for run, c in RUNS.items() if c["tokenizer"] == "3mer" and blocks & set(c["grid"].split("+"))]


def design_fasta(wildcards):
    path = Path(DESIGN_SETS[wildcards.protein_set])
    return str(path if path.is_absolute() else REPO / path)


def design_targets():
    if not DESIGN_SETS:
        return []
    return [f"{R}/tables/design.csv"]


for _set, _fasta in DESIGN_SETS.items():
    _path = Path(_fasta) if Path(_fasta).is_absolute() else REPO / _fasta
    if not _path.is_file():
        raise ValueError(f"design.protein_sets.{_set}: {_fasta}: no such FASTA file")


rule design:
    input:
        run=f"{R}/pretrain/{{run}}/metrics.json",
        fasta=design_fasta,
    output:
        f"{R}/design/{{run}}/{{protein_set}}/designs.json",
    wildcard_constraints:
        protein_set=_alternation(DESIGN_SETS),
    params:
        args=lambda w: format_args(DESIGN.get("args")),
        rundir=lambda w, input: os.path.dirname(input.run),
        out=lambda w, output: os.path.dirname(output[0]),
    threads: resources("downstream", "threads")
    resources:
        **slurm_resources("downstream"),
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
