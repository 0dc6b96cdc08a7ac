"""`helm design`: protein in, synonymous coding sequences out (docs/ARCHITECTURE.md, "Design").

- `helm.design.protein`: reading and checking proteins, the synonymous codons of each residue;
- `helm.design.scores`: host codon-usage tables, CAI, GC, ViennaRNA MFE, constraints and their repair, the
  objective (a weighted sum of scores);
- `helm.design.model`: a trained run as a codon model: constrained CLM decoding (greedy / beam / sampling, key/value
  cache for gpt2), MLM Gibbs / annealing refinement, log-likelihoods;
- `helm.design.baselines`: most-frequent codon, host-usage sampling, random synonymous, DNA Chisel;
- `helm.design.command`: the command (settings dataclass -> flags, one JSON record);
- `helm.design.benchmark`: codon recovery and natural-CDS likelihood on held-out proteins, the trade-off table.

The field's tools (ViennaRNA, DNA Chisel, python-codon-tables) are the ``design`` extra: ``pip install
'helm-mrna[design]'``; nothing outside this package imports them.
"""
