"""`helm export`: a run directory as a Hugging Face folder that transformers loads without helm.

Tiny runs (2 layers x 32) of every backbone x mode (plus position/tying/vocabulary/tokenizer variants) are exported
once; ONE subprocess that cannot import helm (an import hook refuses it) loads every folder with the Auto classes
and reports tokenizer ids, logits, hidden states, generations and losses, which the tests compare with helm's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helm_free import NO_HELM, helm_free_env

from helm.codons import CLS_ID, EOS_ID, MASK_ID, SPECIALS, UNK_ID, translate
from helm.downstream.embed import encode
from helm.export import ExportError, export_run
from helm.models import create_model
from helm.run import MODEL_DIR, TOKENIZER_DIR, load_run, write_config, write_metrics
from helm.tokenizers import create_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HELM_SHARED_DATA", REPO.parent / "shared" / "data"))
OAS = SHARED_DATA / "pretrain" / "oas_parameswaran2013_heavy_100k.csv.gz"
MAX_SEQ_LEN = 256
# the first 60 codons of the mRFP CDS (CodonBERT's mRFP expression set, where it is written as RNA)
MRFP = (
    "ATGGCATCATCAGAAGACGTCATAAAAGAATTTATGCGATTCAAAGTCCGCATGGAAGGGTCAGTAAACGGACACGAATTCGAAATCGAAGGAGAAGGAGAA"
    "GGCCGCCCATACGAAGGTACCCAAACAGCCAAACTAAAAGTAACTAAAGGCGGACCACTCCCCTTC"
)

BACKBONES = ("gpt2", "bert", "mamba", "hyena")
# (backbone, mode, tokenizer, ModelConfig fields); mamba MLM uses the paper's Bi-Mamba layout (the -mlm presets')
CASES: dict[str, tuple[str, str, str, dict]] = {
    f"{arch}-{mode}": (arch, mode, "3mer", {"bimamba": "concat"} if (arch, mode) == ("mamba", "mlm") else {})
    for arch in BACKBONES
    for mode in ("mlm", "clm")
}
VARIANTS: dict[str, tuple[str, str, str, dict]] = {
    "gpt2-clm-rotary-tied": ("gpt2", "clm", "3mer", {"pos_embedding": "rotary", "tie_embeddings": True}),
    "bert-mlm-rotary": ("bert", "mlm", "3mer", {"pos_embedding": "rotary"}),
    "gpt2-mlm-padded-vocab": ("gpt2", "mlm", "3mer", {"pad_vocab_size_multiple": 8}),
    "mamba-clm-mamba2": ("mamba", "clm", "3mer", {"ssm_layer": "Mamba2"}),
    "mamba-mlm-add": ("mamba", "mlm", "3mer", {"bimamba": "add"}),
    "hyena-mlm-concat-positions": ("hyena", "mlm", "3mer", {"pos_embedding_apply": "concat", "pos_embedding_dim": 8}),
    "gpt2-mlm-nuc": ("gpt2", "mlm", "nuc", {}),
    "gpt2-clm-aa": ("gpt2", "clm", "aa", {}),
    "gpt2-mlm-6mer": ("gpt2", "mlm", "6mer", {}),
    "gpt2-clm-bpe": ("gpt2", "clm", "bpe", {}),
}
ALL_CASES = {**CASES, **VARIANTS}
CLM_CASES = [name for name, spec in ALL_CASES.items() if spec[1] == "clm"]


def real_cds() -> list[str]:
    """Real CDS: the mRFP prefix and, where the shared data is present, the first OAS heavy-chain CDS."""
    seqs = [MRFP]
    if OAS.exists():
        from helm.io import oas_cds, read_records

        for _, row in read_records(OAS):
            seq, reason, _ = oas_cds(row)
            if reason is None:
                seqs.append(seq)
            if len(seqs) == 4:
                break
    return seqs


def tokenizer_inputs(tokenizer: str) -> list[str]:
    """What the tokenizers are compared on: the CDS as DNA, lower case, RNA, lower-case RNA, with an N, with a
    partial trailing codon (proteins for the aa tokenizer: the translations, also lower case and with X)."""
    cds = real_cds()
    if tokenizer == "aa":
        prots = [translate(s) for s in cds]
        return prots + [p.lower() for p in prots] + [p[:5] + "X" + p[6:] for p in prots]
    out = []
    for s in cds:
        out += [s, s.lower(), s.replace("T", "U"), s.lower().replace("t", "u"), s[:7] + "N" + s[8:], s + "AC"]
    return out + [cds[0][:6] + "<mask>" + cds[0][6:30]]  # a special token's name in the text: that token


def exported_reading(tokenizer, text: str) -> list[int]:
    """The ids an export must give: "<mask>" written in the text is the mask token (what transformers' fill-mask
    pipeline writes), the rest is read as helm reads sequences."""
    pieces = text.split("<mask>")
    ids = tokenizer.encode(pieces[0]).tolist()
    for piece in pieces[1:]:
        ids += [MASK_ID, *tokenizer.encode(piece).tolist()]
    return ids


def masked_text(tokenizer, mode: str) -> tuple[str, list[int], int] | None:
    """MLM runs with a fixed tokenizer: the mRFP prefix with its 5th token's text replaced by "<mask>", the framed
    ids helm's model reads for it, and the mask's position in them."""
    k = getattr(tokenizer, "k", 0)
    if mode != "mlm" or not k or tokenizer.vocab.kind == "aa":
        return None
    seq = MRFP[: 12 * k]
    text = seq[: 4 * k] + "<mask>" + seq[5 * k :]
    return text, [CLS_ID, *exported_reading(tokenizer, text), EOS_ID], 5


def model_batch_inputs(tokenizer: str) -> list[str]:
    """Three sequences of different lengths (so the batch is padded), mixed case and RNA included."""
    seqs = tokenizer_inputs(tokenizer)
    return [seqs[0][:120], seqs[1][30:90], seqs[2][:150]]


def make_run(root: Path, name: str, arch: str, mode: str, tokenizer: str = "3mer", overlap: int = 0, **fields) -> Path:
    """A finished run directory as helm.run reads it (model/, tokenizer/, config.yaml, metrics.json)."""
    tok = create_tokenizer(tokenizer, overlap=overlap, vocab_size=64)
    if tok.vocab is None:  # learned: trained on real and random CDS
        rng = np.random.default_rng(0)
        tok.train(real_cds() + ["".join(rng.choice(list("ACGT"), 120)) for _ in range(100)])
    torch.manual_seed(0)
    model = create_model(arch, vocab_size=len(tok), num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                         max_seq_len=MAX_SEQ_LEN, bidirectional=mode == "mlm", **fields)  # fmt: skip
    with torch.no_grad():  # off the init: zero biases / unit norms would hide a weight that is not loaded
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    run = root / name
    model.save_pretrained(run / MODEL_DIR)
    tok.save(run / TOKENIZER_DIR)
    write_config(run, {"model_name": arch, "mode": mode, "tokenizer": tokenizer, "max_seq_len": MAX_SEQ_LEN})
    write_metrics(run, {"steps": 1})
    return run


def reference(run_dir: Path, mode: str, tokenizer: str, arrays: Path) -> dict:
    """helm's answers for one run: ids, framed ids, a padded batch's logits and hidden states (right padding as the
    tokenizer pads, and the same rows left-padded), greedy continuations (CLM), losses."""
    run = load_run(run_dir)
    alphabet = "aa" if tokenizer == "aa" else "nuc"
    seqs = tokenizer_inputs(tokenizer)
    ids = [exported_reading(run.tokenizer, s) for s in seqs]
    framed = [[CLS_ID, *i] + ([EOS_ID] if mode == "mlm" else []) for i in ids]
    batch = model_batch_inputs(tokenizer)
    enc = encode(run.tokenizer, batch, MAX_SEQ_LEN, mode=mode, alphabet=alphabet)
    long_seq = seqs[0] * 4  # longer than max_seq_len for the nuc tokenizer: truncated as helm truncates
    long_ids = encode(run.tokenizer, [long_seq], MAX_SEQ_LEN, mode=mode, alphabet=alphabet).ids[0].tolist()
    # the same rows with their pads in front (helm's models take pads anywhere)
    order = torch.argsort(enc.mask.int(), dim=1, stable=True)
    left_ids, left_mask = enc.ids.gather(1, order), enc.mask.gather(1, order)
    model = run.model
    with torch.no_grad():
        logits, hidden = model(enc.ids, enc.mask), model.embed(enc.ids, enc.mask)
        left_logits, left_hidden = model(left_ids, left_mask), model.embed(left_ids, left_mask)
        labels = enc.ids.masked_fill(~enc.mask, -100)
        if mode == "mlm":
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        else:  # transformers' causal LM convention: labels = input_ids, shifted inside the model
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
        generated = None
        if mode == "clm":
            seq = enc.ids[:1, :4]
            for _ in range(4):  # greedy; transformers stops at <eos> (generation_config.json)
                seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
                if int(seq[0, -1]) == EOS_ID:
                    break
            generated = seq[0].tolist()
        fill = None
        if (masked := masked_text(run.tokenizer, mode)) is not None:  # the fill-mask pipeline's answer, by hand
            text, framed_ids, at = masked
            probs = model(torch.tensor([framed_ids]))[0, at].softmax(-1)
            top = probs.topk(5)
            fill = {"text": text, "ids": top.indices.tolist(), "scores": top.values.tolist(),
                    "tokens": [run.tokenizer.vocab.tokens[i] for i in top.indices.tolist()]}  # fmt: skip
    np.savez(arrays, ids=enc.ids.numpy(), mask=enc.mask.numpy(), logits=logits.numpy(), hidden=hidden.numpy(),
             left_ids=left_ids.numpy(), left_mask=left_mask.numpy(), left_logits=left_logits.numpy(),
             left_hidden=left_hidden.numpy())  # fmt: skip
    return {"mode": mode, "seqs": seqs, "ids": ids, "framed": framed, "batch": batch, "batch_ids": enc.ids.tolist(),
            "long_seq": long_seq, "long_ids": long_ids, "loss": float(loss), "generated": generated, "fill": fill,
            "decoded": [run.tokenizer.decode(i) for i in ids]}  # fmt: skip


# Runs in a fresh interpreter that must never import helm: only transformers' Auto classes and the exported files.
CHECK_SCRIPT = r"""
import numpy as np
import torch
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer,
                          PreTrainedTokenizerFast, pipeline)

cases = json.load(open(sys.argv[1]))
results = {}
for name, case in cases.items():
    out, mode = case["out"], case["mode"]
    ref = np.load(case["arrays"])
    res = {}
    tok = AutoTokenizer.from_pretrained(out)
    res["tokenizer_fast"] = isinstance(tok, PreTrainedTokenizerFast) and tok.is_fast
    res["special_ids"] = {role: tok.convert_tokens_to_ids(getattr(tok, role)) for role in
                          ("pad_token", "cls_token", "eos_token", "unk_token", "mask_token", "sep_token")}
    res["ids"] = [tok(s, add_special_tokens=False)["input_ids"] for s in case["seqs"]]
    # transformers 5 reads config.json first (and asks about its code unless told): the same tokenizer either way
    trusting = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    res["ids_trusting"] = [trusting(s, add_special_tokens=False)["input_ids"] for s in case["seqs"]]
    res["framed"] = [tok(s)["input_ids"] for s in case["seqs"]]
    res["decoded"] = [tok.decode(i, skip_special_tokens=True) for i in res["ids"]]
    res["long_ids"] = tok(case["long_seq"], truncation=True)["input_ids"]
    batch = tok(case["batch"], padding=True, return_tensors="pt")
    res["batch_ids"] = batch["input_ids"].tolist()
    head = AutoModelForMaskedLM if mode == "mlm" else AutoModelForCausalLM
    model = head.from_pretrained(out, trust_remote_code=True)
    base = AutoModel.from_pretrained(out, trust_remote_code=True)
    res["classes"] = [type(model).__name__, type(base).__name__]
    diffs = {"logits": 0.0, "hidden": 0.0}
    with torch.no_grad():
        for prefix, ids, mask in (("", batch["input_ids"], batch["attention_mask"]),
                                  ("left_", torch.from_numpy(ref["left_ids"]), torch.from_numpy(ref["left_mask"]))):
            logits = model(input_ids=ids, attention_mask=mask).logits.numpy()
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
            diffs["logits"] = max(diffs["logits"], float(np.abs(logits - ref[prefix + "logits"]).max()))
            diffs["hidden"] = max(diffs["hidden"], float(np.abs(hidden - ref[prefix + "hidden"]).max()))
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        res["loss"] = float(model(**batch, labels=labels).loss)
        if mode == "clm":
            res["generated"] = model.generate(batch["input_ids"][:1, :4], max_new_tokens=4, do_sample=False)[0].tolist()
    res["diffs"] = diffs
    if case["fill"] is not None:  # transformers' own MLM client, with the tokenizer as it loads by default
        fill = pipeline("fill-mask", model=out, trust_remote_code=True)
        res["fill"] = fill(case["fill"]["text"], top_k=5)
    try:  # without trust_remote_code the folder must not load at all (no native class fits it)
        AutoModel.from_pretrained(out)
        res["plain_load"] = "loaded"
    except (ValueError, OSError) as err:
        res["plain_load"] = type(err).__name__
    results[name] = res
results["__helm_imported__"] = any(m == "helm" or m.startswith("helm.") for m in sys.modules)
json.dump(results, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """{"root", "cases": {name: helm reference + out}, "results": {name: what transformers gave}}."""
    root = tmp_path_factory.mktemp("export")
    cases = {}
    for name, (arch, mode, tokenizer, fields) in ALL_CASES.items():
        run = make_run(root / "runs", name, arch, mode, tokenizer, **fields)
        out = export_run(run, root / "hf" / f"hf-{name}")  # distinct folder names: transformers caches code by name
        cases[name] = {**reference(run, mode, tokenizer, root / f"{name}.npz"), "out": str(out),
                       "arrays": str(root / f"{name}.npz")}  # fmt: skip
    (root / "cases.json").write_text(json.dumps(cases))
    (root / "check.py").write_text(NO_HELM + CHECK_SCRIPT)
    env = helm_free_env(root, TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(
        [sys.executable, str(root / "check.py"), str(root / "cases.json"), str(root / "results.json")],
        cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"root": root, "cases": cases, "results": json.loads((root / "results.json").read_text())}


def test_transformers_process_never_imports_helm(exported):
    assert exported["results"]["__helm_imported__"] is False


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_autotokenizer_gives_helm_ids_and_framing(exported, name):
    ref, got = exported["cases"][name], exported["results"][name]
    assert got["tokenizer_fast"]
    assert got["special_ids"] == {"pad_token": 0, "cls_token": 1, "eos_token": 2, "unk_token": 3, "mask_token": 4,
                                  "sep_token": 5}  # fmt: skip
    assert got["ids"] == ref["ids"]  # encode(seq), no specials
    assert got["ids_trusting"] == ref["ids"]
    assert got["framed"] == ref["framed"]  # MLM <cls> ... <eos>, CLM <cls> ...
    assert got["batch_ids"] == ref["batch_ids"]  # padded batch = helm's downstream encode
    assert got["long_ids"] == ref["long_ids"]  # truncation=True cuts to max_seq_len as helm does
    assert got["decoded"] == ref["decoded"]


MLM_FIXED = [name for name, spec in ALL_CASES.items() if spec[1] == "mlm"]


@pytest.mark.parametrize("name", MLM_FIXED)
def test_fill_mask_pipeline_gives_helm_top_k_and_scores(exported, name):
    """pipeline("fill-mask") finds the "<mask>" it writes (the tokenizer does not split it into characters) and
    answers helm's top 5 at that position, with helm's softmax as scores (issue 22, point 1)."""
    ref, got = exported["cases"][name]["fill"], exported["results"][name]["fill"]
    assert [r["token"] for r in got] == ref["ids"]
    assert [r["token_str"] for r in got] == ref["tokens"]
    np.testing.assert_allclose([r["score"] for r in got], ref["scores"], rtol=1e-5, atol=1e-7)
    for r in got:  # the filled sequence: the text with the answer in place of "<mask>"
        assert r["sequence"] == ref["text"].replace("<mask>", r["token_str"] if r["token"] >= len(SPECIALS) else "")


def test_learned_tokenizer_exports_read_rna_and_lower_case_as_dna(exported):
    """BPE runs and their exports give lower-case and RNA text the ids of the DNA (never <unk>) (point 2)."""
    got = exported["results"]["gpt2-clm-bpe"]["ids"]
    for dna, lower, rna, lower_rna in zip(got[0::6], got[1::6], got[2::6], got[3::6], strict=False):
        assert UNK_ID not in dna and dna == lower == rna == lower_rna


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_automodel_for_lm_gives_helm_logits_with_padding(exported, name):
    ref, got = exported["cases"][name], exported["results"][name]
    assert got["classes"][0] == ("HelmForMaskedLM" if ref["mode"] == "mlm" else "HelmForCausalLM")
    assert got["diffs"]["logits"] < 1e-5


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_automodel_last_hidden_state_equals_helm_embed(exported, name):
    got = exported["results"][name]
    assert got["classes"][1] == "HelmModel"
    assert got["diffs"]["hidden"] < 1e-5


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_labels_loss_follows_transformers_convention(exported, name):
    """MLM: labels at their positions; CLM: labels = input_ids, shifted inside the model."""
    assert exported["results"][name]["loss"] == pytest.approx(exported["cases"][name]["loss"], abs=1e-5)


@pytest.mark.parametrize("name", CLM_CASES)
def test_clm_generate_matches_helm_greedy_decoding(exported, name):
    assert exported["results"][name]["generated"] == exported["cases"][name]["generated"]


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_config_has_project_model_type_and_needs_remote_code(exported, name):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config = json.loads((Path(exported["cases"][name]["out"]) / "config.json").read_text())
    assert config["model_type"] == f"helm_{ALL_CASES[name][0]}"
    assert config["model_type"] not in CONFIG_MAPPING_NAMES
    assert exported["results"][name]["plain_load"] != "loaded"
    head = "AutoModelForMaskedLM" if ALL_CASES[name][1] == "mlm" else "AutoModelForCausalLM"
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", head}  # never the other head


def test_exported_sources_import_nothing_from_helm(exported):
    out = Path(exported["cases"]["bert-mlm"]["out"])
    assert {"bert.py", "gpt2.py", "base.py", "config.py", "codons.py", "modeling_helm.py"} <= {
        p.name for p in out.glob("*.py")
    }
    for path in out.glob("*.py"):
        assert "from helm" not in path.read_text() and "import helm" not in path.read_text(), path.name


# ------------------------------------------------------------------------------------------------ refusals, CLI
def test_overlapping_kmer_tokenizer_is_refused_and_writes_nothing(tmp_path, capsys):
    from helm.cli import main

    run = make_run(tmp_path, "overlap", "gpt2", "mlm", "3mer", overlap=1)
    with pytest.raises(ExportError, match="overlapping windows"):
        export_run(run, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(["export", str(run), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "overlap=1" in err and "tokenizer.json" in err


@pytest.fixture(scope="module")
def small_run(exported) -> Path:
    return exported["root"] / "runs" / "gpt2-mlm"


def test_cli_export_exits_0_and_writes_the_folder(small_run, tmp_path):
    from helm.cli import main

    out = tmp_path / "hf"
    assert main(["export", str(small_run), str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "configuration_helm.py", "modeling_helm.py", "gpt2.py"} <= names  # fmt: skip
    assert "generation_config.json" not in names  # MLM run


def test_cli_missing_run_is_one_line_error_exit_2(tmp_path, capsys):
    from helm.cli import main

    assert main(["export", str(tmp_path / "no-such-run"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("helm export: error:") and "no-such-run" in err
    assert not (tmp_path / "out").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_nonempty_out_is_not_overwritten_without_overwrite(small_run, tmp_path, capsys):
    from helm.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("mine\n")
    assert main(["export", str(small_run), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _snapshot(out) == {"config.json": b"mine\n"}


def test_overwrite_replaces_only_export_files_and_nothing_outside_out(small_run, exported, tmp_path):
    from helm.cli import main

    out = tmp_path / "out"
    (tmp_path / "beside.txt").write_text("keep\n")
    assert main(["export", str(exported["root"] / "runs" / "hyena-clm"), str(out)]) == 0
    (out / "notes.md").write_text("my notes\n")
    (out / "sub").mkdir()
    (out / "sub" / "config.json").write_text("nested\n")
    run_before = _snapshot(small_run)
    assert main(["export", str(small_run), str(out), "--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "hyena.py" not in names and "generation_config.json" not in names  # the previous export's files went
    assert json.loads((out / "config.json").read_text())["model_type"] == "helm_gpt2"
    assert (out / "notes.md").read_text() == "my notes\n" and (out / "sub" / "config.json").read_text() == "nested\n"
    assert (tmp_path / "beside.txt").read_text() == "keep\n"
    assert _snapshot(small_run) == run_before


@pytest.mark.parametrize("inside", [".", "model", "tokenizer"])
def test_out_that_is_the_run_or_its_model_folders_is_refused(small_run, inside, capsys):
    from helm.cli import main

    before = _snapshot(small_run)
    assert main(["export", str(small_run), str(small_run / inside), "--overwrite"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _snapshot(small_run) == before
