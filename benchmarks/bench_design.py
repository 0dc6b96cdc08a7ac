"""Design speed: a 300-residue protein with a 1M-parameter gpt2 (preset gpt2-1m, 4 x 144) on CPU.

Goal: seconds, not minutes, on 2 cores. Times the model part of `helm design` (no baselines, no MFE) for a CLM
run -- greedy and beam 4 with the key/value cache, greedy recomputing the prefix at every step (what a backbone
without a cache does), sampling 8 designs in one batch -- and for an MLM run (annealing, 8 sweeps, 4 chains), plus
the scoring pass (likelihood of 8 designs: one forward for a CLM, 300 masked rows per design for an MLM). Prints
wall and process CPU seconds (CPU seconds stay meaningful on a busy machine). Weights are random (speed does not
depend on them).

    .venv/bin/python benchmarks/bench_design.py [--threads 2] [--length 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from helm.codons import AMINO_ACIDS
from helm.design.constraints import Constraints
from helm.design.model import CodonModel
from helm.design.protein import synonymous_mask
from helm.models import create_model
from helm.run import MODEL_DIR, TOKENIZER_DIR, load_run, write_config
from helm.tokenizers import create_tokenizer


def make_run(root: Path, mode: str) -> Path:
    tok = create_tokenizer("3mer")
    torch.manual_seed(0)
    model = create_model("gpt2", vocab_size=len(tok), num_layers=4, hidden_size=144, num_heads=2,
                         intermediate_size=576, max_seq_len=444, bidirectional=mode == "mlm")  # fmt: skip
    run = root / f"gpt2-1m-{mode}"
    model.save_pretrained(run / MODEL_DIR)
    tok.save(run / TOKENIZER_DIR)
    write_config(run, {"model_name": "gpt2", "mode": mode, "tokenizer": "3mer", "max_seq_len": 444})
    return run


def timed(label: str, fn) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    print(f"{label:<46} wall {time.perf_counter() - wall:7.2f} s   cpu {time.process_time() - cpu:7.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    protein = "M" + "".join(rng.choice(list(AMINO_ACIDS), args.length - 1))
    cons = Constraints(avoid=["GGTCTC", "CGTCTC"])  # the default GC range and homopolymer limit, two sites
    bias = np.zeros(64)
    with tempfile.TemporaryDirectory() as tmp:
        clm = CodonModel(load_run(make_run(Path(tmp), "clm")))
        mlm = CodonModel(load_run(make_run(Path(tmp), "mlm")))
        print(f"gpt2-1m: {clm.lm.num_parameters():,} parameters; protein of {len(protein)} residues; "
              f"threads={torch.get_num_threads()}")  # fmt: skip
        timed("CLM greedy (kv cache)", lambda: clm.decode(protein, "greedy", 1, bias, cons))
        timed("CLM beam 4 (kv cache)", lambda: clm.decode(protein, "beam", 4, bias, cons, beam_size=4))
        timed("CLM sample 8 designs (kv cache)", lambda: clm.decode(protein, "sample", 8, bias, cons))
        import helm.design.model as dm

        keep, dm.GPT2LM = dm.GPT2LM, type("NoCache", (), {})
        timed("CLM greedy (recompute the prefix each step)", lambda: clm.decode(protein, "greedy", 1, bias, cons))
        dm.GPT2LM = keep
        designs = np.array([[rng.choice(np.flatnonzero(r)) for r in synonymous_mask(protein)] for _ in range(8)])
        timed("CLM likelihood of 8 designs", lambda: clm.log_likelihoods(protein, list(designs)))
        timed("MLM anneal, 8 sweeps, 4 chains", lambda: mlm.refine(protein, designs[:4], bias, cons, sweeps=8))
        timed("MLM pseudo-likelihood of 8 designs", lambda: mlm.log_likelihoods(protein, list(designs)))


if __name__ == "__main__":
    main()
