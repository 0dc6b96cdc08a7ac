"""Sampling filters and the batched sampler vs a one-row-at-a-time greedy decoder; generate CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helm.codons import CLS_ID, EOS_ID, SPECIALS
from helm.downstream.generate import filter_logits, sample
from helm.run import load_run

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    # nucleus: smallest prefix of the sorted probabilities whose mass reaches p
    for p, keep in [(0.5, 1), (0.6, 2), (0.7, 2), (0.8, 3), (0.86, 4), (1.0, 5)]:
        assert int(torch.isfinite(filter_logits(logits, top_p=p)).sum()) == keep, p
    shuffled = logits[:, [3, 0, 4, 2, 1]]  # order of the vocabulary must not matter
    assert torch.isfinite(filter_logits(shuffled, top_p=0.6))[0].tolist() == [False, True, False, False, True]


def greedy_one(model, prompt: np.ndarray, max_new: int) -> np.ndarray:
    ids = [CLS_ID, *prompt.tolist()]
    for _ in range(max_new):
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1].clone()
        eos = logits[EOS_ID].item()
        logits[: len(SPECIALS)] = float("-inf")  # only sequence tokens and <eos> may be drawn
        logits[EOS_ID] = eos
        nxt = int(logits.argmax())
        if nxt == EOS_ID:
            break
        ids.append(nxt)
    return np.array(ids[1:])


def test_batched_sampler_matches_single_row_greedy(tiny_runs):
    run = load_run(tiny_runs["clm"])
    rng = np.random.default_rng(0)
    prompts = [rng.integers(6, 70, size=n) for n in (0, 3, 7, 1)]
    got = sample(run.model, prompts, max_new_tokens=12, top_k=1, seed=0, batch_size=3)
    for p, g in zip(prompts, got):
        np.testing.assert_array_equal(g, greedy_one(run.model, p, 12))
        np.testing.assert_array_equal(g[: len(p)], p)


def test_sampling_is_seeded_and_draws_only_sequence_tokens(tiny_runs):
    run = load_run(tiny_runs["clm"])
    prompts = [np.zeros(0, dtype=np.int64)] * 4
    a = sample(run.model, prompts, 20, temperature=1.5, top_k=0, top_p=1.0, seed=3)
    b = sample(run.model, prompts, 20, temperature=1.5, top_k=0, top_p=1.0, seed=3)
    assert all((x == y).all() for x, y in zip(a, b))
    assert all((x >= len(SPECIALS)).all() for x in a)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "helm.cli", *args], capture_output=True, text=True, timeout=600)


def test_generate_refuses_mlm_run(tiny_runs, shared_data, tmp_path, capsys):
    from helm.downstream.generate import main

    out = tmp_path / "g.json"
    with pytest.raises(SystemExit) as exc:
        main(
            ["--run", str(tiny_runs["mlm"]), "--out", str(out), "--num-samples", "2", "--data", str(shared_data / OAS)]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2 and not out.exists() and len(err.splitlines()) == 1
    assert "needs a CLM (causal) run" in err and "mode='mlm'" in err


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["none", "cdr3"])
def test_generate_cli_end_to_end(trained_clm, shared_data, tmp_path, prompt):
    """A really trained CLM (real `train.py` run); prompts from scratch or OAS rows cut before their CDR3."""
    out = tmp_path / f"gen_{prompt}.json"
    res = run_cli(
        "generate",
        "--run",
        str(trained_clm[0]),
        "--out",
        str(out),
        "--num-samples",
        "6",
        "--reference",
        str(shared_data / OAS),
        "--num-reference",
        "12",
        "--prompt",
        prompt,
        "--max-new-tokens",
        "30",
        "--seed",
        "1",
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["task"] == "generation" and payload["run"] == "oas-clm"
    m = payload["metrics"]
    space = payload["config"]["embedder_name"]
    assert space == "run:oas-clm" and payload["config"]["embedding_space"] == "nucleotide"
    for key in ("in_frame_frac", "valid_orf_frac", "gc_content", "codon_usage_distance", "internal_diversity",
                f"frechet_distance@{space}", f"precision@{space}", f"recall@{space}"):  # fmt: skip
        assert m[key] is not None, key
    assert m["ref_in_frame_frac"] == 1.0  # OAS V(D)J fragments are in frame
    fasta = (tmp_path / f"gen_{prompt}.fasta").read_text().split("\n")
    seqs = fasta[1::2][:6]
    assert len(seqs) == 6 and all(set(s) <= set("ACGT") for s in seqs)
    from helm.downstream.metrics import is_valid_orf

    assert m["valid_orf_frac"] == pytest.approx(np.mean([is_valid_orf(s) for s in seqs]))
    if prompt == "none":
        assert all(len(s) <= 90 for s in seqs)  # at most 30 new codons


@pytest.mark.slow
def test_generate_with_prepared_reference(trained_clm, tmp_path):
    """The reference can be a prepared directory: its held-out split, decoded with its tokenizer."""
    run, prepared = trained_clm
    out = tmp_path / "g.json"
    res = run_cli(
        "generate",
        "--run",
        str(run),
        "--out",
        str(out),
        "--num-samples",
        "4",
        "--reference",
        str(prepared),
        "--prompt",
        "codons",
        "--prompt-codons",
        "5",
        "--max-new-tokens",
        "20",
        "--num-reference",
        "10",
    )
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["config"]["num_reference"] == 10 and payload["config"]["prompt_codons"] == 5
    assert payload["metrics"]["ref_gc_content"] > 0


# ------------------------------------------------------------------------------ protein-space embeddings


def synonymous_recoding(cds: str, rng: np.random.Generator) -> str:
    """The same protein with every codon replaced by a random synonymous one."""
    from helm.codons import GENETIC_CODE

    synonyms: dict[str, list[str]] = {}
    for codon, aa in GENETIC_CODE.items():
        synonyms.setdefault(aa, []).append(codon)
    return "".join(rng.choice(synonyms[GENETIC_CODE[cds[i : i + 3]]]) for i in range(0, len(cds) - 2, 3))


@pytest.fixture(scope="module")
def oas_cds(shared_data) -> list[str]:
    from helm.io import oas_cds, read_records

    out = []
    for _, row in read_records(shared_data / OAS):
        seq, reason, _ = oas_cds(row)
        if reason is None:
            out.append(seq)
        if len(out) == 24:
            return out


@pytest.fixture(scope="module")
def tiny_esm(tmp_path_factory):
    """A randomly initialised Hugging Face ESM checkpoint directory with the ESM-2 alphabet (real classes)."""
    from transformers import EsmConfig, EsmModel, EsmTokenizer

    path = tmp_path_factory.mktemp("esm")
    tokens = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<null_1>", "<mask>"]
    (path / "vocab.txt").write_text("\n".join(tokens) + "\n")
    torch.manual_seed(0)
    config = EsmConfig(vocab_size=len(tokens), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=202, pad_token_id=1, mask_token_id=32,
                       position_embedding_type="rotary", token_dropout=False)  # fmt: skip
    EsmModel(config, add_pooling_layer=False).save_pretrained(path)
    EsmTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    return path


def test_to_protein_stops_at_the_first_stop_codon():
    from helm.downstream.generate import to_protein

    assert to_protein("ATGAAATTTTAAGGGCCC") == "MKF"
    assert to_protein("ATGAAAT") == "MK" and to_protein("TAAATG") == "" and to_protein("") == ""


@pytest.mark.parametrize("space", ["aa-run", "esm"])
def test_protein_space_cannot_tell_synonymous_recodings_apart(space, oas_cds, tiny_runs, tiny_esm, tmp_path):
    """The paper's Fréchet distance lives in protein space: samples that are synonymous recodings of the
    reference score a distance of zero there, while the nucleotide-space embedder sees the difference."""
    from helm.downstream.generate import EsmEmbedder, RunEmbedder, score

    from .runs import make_run

    rng = np.random.default_rng(0)
    recoded = [synonymous_recoding(s, rng) for s in oas_cds]
    assert recoded != oas_cds
    if space == "esm":
        protein = EsmEmbedder(tiny_esm, batch_size=5)
    else:
        protein = RunEmbedder(load_run(make_run(tmp_path, "aa-mlm", "mlm", tokenizer="aa")))
    nucleotide = RunEmbedder(load_run(tiny_runs["mlm"]))
    assert (protein.alphabet, nucleotide.alphabet) == ("aa", "nuc")
    in_protein = score(recoded, oas_cds, protein, pca_components=4, threshold=0.05)
    in_nucleotide = score(recoded, oas_cds, nucleotide, pca_components=4, threshold=0.05)
    assert in_protein["num_empty_protein"] == 0 and in_protein["ref_num_empty_protein"] == 0
    p, n = protein.name, nucleotide.name
    assert p == (f"esm:{tiny_esm.name}" if space == "esm" else "run:aa-mlm") and n == "run:tiny-mlm"
    assert in_protein[f"frechet_distance@{p}"] == pytest.approx(0, abs=1e-6)
    assert (in_protein[f"precision@{p}"], in_protein[f"recall@{p}"]) == (1.0, 1.0)
    assert in_nucleotide[f"frechet_distance@{n}"] > 1e-3
    # batching and padding do not change an embedding
    single = np.concatenate([protein([p]) for p in ["MKV", "MKVLLAGW"]])
    np.testing.assert_allclose(protein(["MKV", "MKVLLAGW"]), single, atol=1e-5)


def test_generate_cli_with_esm_embedder(tiny_runs, tiny_esm, shared_data, tmp_path):
    out = tmp_path / "g.json"
    args = ["generate", "--run", str(tiny_runs["clm"]), "--out", str(out), "--num-samples", "6", "--reference",
            str(shared_data / OAS), "--num-reference", "8", "--prompt", "codons", "--prompt-codons", "20",
            "--max-new-tokens", "10", "--esm", str(tiny_esm)]  # fmt: skip
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    payload = json.loads(out.read_text())
    assert payload["config"]["embedding_space"] == "protein" and payload["config"]["embedder"] == str(tiny_esm)
    assert payload["config"]["embedder_name"] == f"esm:{tiny_esm.name}"
    m = payload["metrics"]
    assert m["num_empty_protein"] + 2 <= 6 and np.isfinite(m[f"frechet_distance@esm:{tiny_esm.name}"])
    assert not {"frechet_distance", "precision", "recall"} & set(m)
    res = run_cli(*args, "--embed-run", str(tiny_runs["mlm"]))
    assert res.returncode == 2 and "not allowed with argument" in res.stderr
    res = run_cli(*args[:-1], str(tmp_path))
    assert res.returncode == 2 and "not a Hugging Face model directory" in res.stderr


# ------------------------------------------------------------------------------ metric names and reference values


def test_embedding_metric_names_carry_the_embedder(tiny_runs, shared_data, tmp_path):
    """Values from different embedding spaces never share a name: the own encoder, an --embed-run (here an aa
    run) and an ESM checkpoint (test_generate_cli_with_esm_embedder) each label frechet_distance /
    precision / recall with themselves."""
    from .runs import make_run

    aa_run = make_run(tmp_path, "aa-ref", "mlm", tokenizer="aa")
    common = ["generate", "--run", str(tiny_runs["clm"]), "--num-samples", "6", "--reference",
              str(shared_data / OAS), "--num-reference", "8", "--prompt", "codons", "--prompt-codons", "20",
              "--max-new-tokens", "10"]  # fmt: skip
    cases = {
        "own": ([], "run:tiny-clm", "nucleotide"),
        "embed-run": (["--embed-run", str(aa_run)], "run:aa-ref", "protein"),
    }
    names = {}
    for case, (extra, space, kind) in cases.items():
        out = tmp_path / f"{case}.json"
        res = run_cli(*common, *extra, "--out", str(out))
        assert res.returncode == 0, res.stderr
        payload = json.loads(out.read_text())
        assert (payload["config"]["embedder_name"], payload["config"]["embedding_space"]) == (space, kind)
        embedding = {k for k in payload["metrics"] if "@" in k}
        assert embedding == {f"{m}@{space}" for m in ("frechet_distance", "precision", "recall")}, case
        assert not {"frechet_distance", "precision", "recall"} & set(payload["metrics"])
        assert space in res.stdout  # the summary line names the space of its Fréchet distance
        names[case] = embedding
    assert not names["own"] & names["embed-run"]


def test_esm_checkpoint_name_of_a_hub_cache_snapshot(tmp_path):
    from helm.downstream.source import checkpoint_name as esm_checkpoint_name

    snapshot = tmp_path / "models--facebook--esm2_t12_35M_UR50D" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert esm_checkpoint_name(snapshot) == "esm2_t12_35M_UR50D"
    assert esm_checkpoint_name(tmp_path / "esm2_t6_8M_UR50D/") == "esm2_t6_8M_UR50D"


def in_frame_brute_force(seq: str) -> bool:
    """Written from the definition: whole codons only, at least one, and a stop codon only as the last codon."""
    if len(seq) == 0 or len(seq) % 3 != 0:
        return False
    codons = [seq[i : i + 3] for i in range(0, len(seq), 3)]
    return not any(c in ("TAA", "TAG", "TGA") for c in codons[:-1])


def test_in_frame_against_brute_force_definition():
    import itertools

    from helm.downstream.generate import is_in_frame, sequence_metrics

    crafted = {
        "": False,
        "ATG": True,
        "TAA": True,  # a lone stop is the last codon
        "ATGTAA": True,
        "TAAATG": False,
        "GCTTGAGCT": False,  # internal TGA
        "GCTGAGCTA": True,  # TGA out of frame
        "GCTTAAGCTA": False,  # 10 nt: not whole codons
        "CAGGTGCAGCTG": True,  # an OAS-like start: in frame without ATG
    }
    for seq, want in crafted.items():
        assert is_in_frame(seq) == in_frame_brute_force(seq) == want, seq
    # every sequence over ACGT up to 7 nt, and over the stop letters TAG up to 10 nt (many stop placements)
    seqs = ["".join(p) for n in range(8) for p in itertools.product("ACGT", repeat=n)]
    seqs += ["".join(p) for n in (9, 10) for p in itertools.product("TAG", repeat=n)]
    for seq in seqs:
        assert is_in_frame(seq) == in_frame_brute_force(seq), seq
    subset = [seqs[i] for i in np.random.default_rng(0).choice(len(seqs), 400, replace=False)]
    subset += ["ATGAAATAG", "ATGTAGAAA"]  # a valid ORF and an ATG start with an internal stop
    stats = sequence_metrics(subset)
    assert stats["in_frame_frac"] == pytest.approx(np.mean([in_frame_brute_force(s) for s in subset]))
    want_orf = np.mean([in_frame_brute_force(s) and s.startswith("ATG") for s in subset])
    assert stats["valid_orf_frac"] == pytest.approx(want_orf)


def test_reference_metrics_on_real_oas_rows(tiny_runs, shared_data):
    """Every sequence-level metric has the reference set's own value beside it. OAS V(D)J CDSs are in frame
    (measured: 2000 of 2000 rows) but almost never start with ATG (valid ORF: 1 of 2000), so in_frame_frac is
    the validity that makes sense for them; the reference values are the samples' targets."""
    from helm.downstream.generate import (
        SEQUENCE_METRICS,
        RunEmbedder,
        is_in_frame,
        read_reference,
        score,
        sequence_metrics,
    )
    from helm.downstream.metrics import is_valid_orf

    refs, _ = read_reference(shared_data / OAS, 2000)
    assert len(refs) == 2000
    assert sum(map(is_in_frame, refs)) == 2000
    assert sum(map(is_valid_orf, refs)) <= 2  # measured: 1
    refs = refs[:40]  # internal diversity: 780 Levenshtein pairs of ~280 nt
    ref = sequence_metrics(refs)
    assert ref["in_frame_frac"] == 1.0 and 250 < ref["mean_length_nt"] < 320 and 0.4 < ref["gc_content"] < 0.7
    # a "generated" set: reference rows, every other one broken by an in-frame stop codon
    generated = [s if i % 2 else s[:30] + "TGA" + s[33:] for i, s in enumerate(refs[:20])]
    m = score(generated, refs, RunEmbedder(load_run(tiny_runs["clm"])), pca_components=4, threshold=0.05)
    for name in SEQUENCE_METRICS:
        assert name in m and m[f"ref_{name}"] == ref[name], name
    assert m["ref_in_frame_frac"] == 1.0 and m["in_frame_frac"] == 0.5
    assert m["ref_no_internal_stop_frac"] == 1.0 and m["no_internal_stop_frac"] == 0.5
    assert m["ref_internal_diversity"] > 0


def test_frechet_distance_is_fitted_on_the_reference_by_default(tiny_runs, shared_data):
    """`helm generate`'s default Fréchet distance is the paper's: PCA with 4 components fitted on the reference
    embeddings only (docs/PROTOCOL.md "Generation"), checked against an independent implementation on the real
    embeddings of a tiny run; `--pca-fit both` keeps the earlier union fit reachable."""
    from helm.downstream.generate import RunEmbedder, build_parser, read_reference, score
    from helm.downstream.metrics import frechet_distance, pca_project

    from .test_metrics import reference_pca_frechet

    args = build_parser().parse_args(["--run", "r", "--out", "o.json", "--reference", "ref"])
    assert (args.pca_components, args.pca_fit) == (4, "reference")
    refs, _ = read_reference(shared_data / OAS, 40)
    generated = [s[: 3 * (20 + i)] for i, s in enumerate(refs[:20])]  # shortened reference rows
    embedder = RunEmbedder(load_run(tiny_runs["clm"]))
    e_gen, e_ref = embedder(generated), embedder(refs)
    name = f"frechet_distance@{embedder.name}"
    got = score(generated, refs, embedder, pca_components=4, threshold=0.05)[name]
    assert got == pytest.approx(reference_pca_frechet(e_gen, e_ref, 4), rel=1e-5)
    union = score(generated, refs, embedder, pca_components=4, threshold=0.05, pca_fit="both")[name]
    assert union == pytest.approx(frechet_distance(*pca_project(e_gen, e_ref, 4, reference_only=False)), rel=1e-6)
    assert union != pytest.approx(got, rel=1e-3)
