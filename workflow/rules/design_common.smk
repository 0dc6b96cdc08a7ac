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
