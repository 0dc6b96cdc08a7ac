# helm-mrna: the HELM paper grid as one DAG. See docs/ARCHITECTURE.md ("Workflow") and config/config.yaml.
#   snakemake --profile workflow/profiles/default --configfile config/smoke.yaml   # tiny CPU grid
#   snakemake --profile slurm    # the paper grid on Slurm (after `make slurm-profile ACCOUNT=... PARTITION=...`)
from snakemake.utils import min_version, validate

min_version("9.0")


# The paper grid, unless config files are given with --configfile: those replace it instead of being merged
# into it, so `--configfile config/smoke.yaml` runs exactly the smoke grid (--config key=value still merges).
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/downstream.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/design_common.smk"
include: "workflow/rules/design.smk"


rule all:
    input:
        final_targets(),
        design_targets(),
    default_target: True
