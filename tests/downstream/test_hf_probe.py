"""`helm embed --hf` / `helm probe --hf`: any local Hugging Face checkpoint through the same datasets, splits,
heads and JSON as our own runs (a tiny BERT + a WordLevel codon tokenizer built here; no hub access)."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
import torch

from helm.cli import main as helm_main
from helm.downstream.source import hf_max_len, hf_texts

DATASET = ["--dataset", "tc_riboswitch"]  # 355 rows of 22-25 codons: small, and lengths vary
RIDGE = ["--head", "ridge", "--alphas", "0.1", "10", "--quiet", "--threads", "1"]


def make_hf_checkpoint(path: Path, max_positions: int = 64) -> Path:
    """A 2-layer BERT (hidden 32) and a codon WordLevel tokenizer (3-mer pre-tokenizer, `[CLS] $A [SEP]`)."""
    from tokenizers import Regex, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + ["".join(c) for c in itertools.product("ACGT", repeat=3)])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Split(Regex(".{1,3}"), behavior="isolated")
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")  # fmt: skip
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)  # fmt: skip
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf") / "tiny-bert")


def by_hand(path: Path, seqs: list[str], max_len: int | None = None) -> list[torch.Tensor]:
    """Per row: transformers' last-layer hidden states of the tokenizer's ids (specials included), one row at a
    time (no padding at all)."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for seq in seqs:
            ids = tok(seq, truncation=max_len is not None, max_length=max_len)["input_ids"]
            out.append(model(input_ids=torch.tensor([ids])).last_hidden_state[0])
    return out


def test_embed_hf_features_are_the_last_hidden_states(hf_dir, shared_data, tmp_path):
    from helm.downstream.datasets import load_dataset
    from helm.downstream.features import load_features

    out = tmp_path / "f.safetensors"
    argv = ["embed", "--hf", hf_dir, *DATASET, "--mirror", shared_data, "--out", out, "--quiet", "--threads", "1"]
    assert helm_main(list(map(str, argv))) == 0
    feats = load_features(out)
    seqs = load_dataset("tc_riboswitch", mirror=shared_data).sequences
    hand = by_hand(hf_dir, seqs)
    assert feats.x.shape[0] == len(seqs) == 355
    for i, h in enumerate(hand):
        n = len(h)  # [CLS] + codons + [SEP]: specials are features, like <cls>/<eos> of our runs
        assert feats.mask[i].sum() == n and feats.mask[i, :n].all()
        torch.testing.assert_close(feats.x[i, :n].float(), h, atol=2e-3, rtol=2e-3)
        assert (feats.x[i, n:] == 0).all()
    meta = feats.meta
    assert meta["run"] == "hf:tiny-bert" and meta["run_dir"] == str(hf_dir)
    assert meta["hf"]["config_sha256"] == hashlib.sha256((hf_dir / "config.json").read_bytes()).hexdigest()
    assert meta["max_len"] == 64 and meta["hf"]["max_positions_from"] == "config.max_position_embeddings"
    assert meta["n_truncated"] == 0 and meta["n_tail_trimmed"] == 0

    # a tiny --max-len: rows longer than 26 tokens (25 codons + 2 specials) are cut by the tokenizer and counted
    cut = tmp_path / "cut.safetensors"
    assert helm_main(list(map(str, [*argv[:-5], "--out", cut, "--max-len", 26, "--quiet", "--threads", 1]))) == 0
    feats = load_features(cut)
    long_rows = [i for i, h in enumerate(hand) if len(h) > 26]
    assert 0 < len(long_rows) < len(seqs)
    assert feats.meta["n_truncated"] == len(long_rows) and feats.x.shape[1] == 26
    for i, h in zip(long_rows[:5], by_hand(hf_dir, [seqs[i] for i in long_rows[:5]], max_len=26)):
        assert len(h) == 26 and feats.mask[i].all()
        torch.testing.assert_close(feats.x[i].float(), h, atol=2e-3, rtol=2e-3)


def test_probe_hf_writes_the_native_json(hf_dir, tiny_runs, shared_data, tmp_path):
    """Same keys as a probe of our own run; `--hf` and `--features` of an `--hf` embed give the same scores."""
    common = [*DATASET, "--seed", "1", "--mirror", str(shared_data), *RIDGE]
    native, hf, feats = tmp_path / "native.json", tmp_path / "hf.json", tmp_path / "hf.safetensors"
    assert helm_main(["probe", "--run", str(tiny_runs["mlm"]), "--out", str(native), *common]) == 0
    assert helm_main(["probe", "--hf", str(hf_dir), "--out", str(hf), *common]) == 0
    a, b = json.loads(native.read_text()), json.loads(hf.read_text())
    assert set(a) == set(b) and set(a["metrics"]) == set(b["metrics"]) and set(a["config"]) == set(b["config"])
    assert b["run"] == "hf:tiny-bert" and b["config"]["run_dir"] == str(hf_dir) and a["config"]["hf"] is None
    assert b["config"]["hf"]["path"] == str(hf_dir.resolve()) and b["config"]["tokenizer"].startswith("hf:")
    assert b["predictions"]["test_index"] == a["predictions"]["test_index"]  # same split
    assert (b["metrics"]["n_test"], b["metrics"]["n_truncated"]) == (a["metrics"]["n_test"], 0)

    argv = ["embed", "--hf", str(hf_dir), *DATASET, "--mirror", str(shared_data), "--out", str(feats), "--quiet"]
    assert helm_main(argv) == 0
    assert helm_main(["probe", "--features", str(feats), "--out", str(tmp_path / "f.json"), *common]) == 0
    c = json.loads((tmp_path / "f.json").read_text())
    assert c["run"] == "hf:tiny-bert" and c["config"]["hf"] == b["config"]["hf"]
    # the file stores float16, --hf embeds in float32: the same model up to that rounding
    assert c["metrics"]["spearman"] == pytest.approx(b["metrics"]["spearman"], abs=0.02)

    # helm tables: its own row, no loss, arch "external"; nothing crashes
    from helm.report import gather, tables

    table = gather.gather(tmp_path, [tiny_runs["mlm"]], [native, hf])
    row = table[table["run"] == "hf:tiny-bert"].iloc[0]
    assert row["arch"] == "external" and row["model"] == "hf:tiny-bert" and row["loss_id"] is None
    summary = tables.summary(table).set_index("run")
    assert {"hf:tiny-bert", "tiny-mlm"} <= set(summary.index)
    assert tables.truncation(table).set_index("run").loc["hf:tiny-bert", "n_truncated"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "RUN", "--hf", "HF"], "give exactly one of --run, --hf, --features (got --run and --hf)"),
        ([], "give exactly one of --run, --hf, --features (got none)"),
        (["--hf", "MISSING"], "--hf MISSING: no such directory"),
        (["--hf", "EMPTY"], "--hf EMPTY: not a Hugging Face model folder (no config.json)"),
        (["--run", "RUN", "--hf-alphabet", "rna"], "--hf-alphabet only apply to --hf"),
        (["--hf", "HF", "--hf-sep", "-"], "--hf-sep needs --hf-words base or codon"),
    ],
)
def test_source_flags_give_one_line_errors(args, message, hf_dir, tiny_runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    names = {"RUN": str(tiny_runs["mlm"]), "HF": str(hf_dir), "MISSING": str(tmp_path / "nope"),
             "EMPTY": str(tmp_path / "empty")}  # fmt: skip
    message = message.replace("MISSING", names["MISSING"]).replace("EMPTY", names["EMPTY"])
    args = [names.get(a, a) for a in args]
    for command in ("probe", "embed"):
        out = tmp_path / f"{command}.out"
        rc = helm_main([command, *args, "--dataset", "tc_riboswitch", "--out", str(out)])
        err = capsys.readouterr().err
        expected = message if command == "probe" else message.replace(", --features", "")
        assert rc == 2 and err == f"helm {command}: error: {expected}\n"
        assert not out.exists()


def test_text_for_foreign_tokenizers():
    seqs = ["ATGGCCTA", "GATGTT"]
    assert hf_texts(seqs, "dna", "none", " ", 0) == (seqs, 0)
    assert hf_texts(seqs, "rna", "codon", " ", 0) == (["AUG GCC", "GAU GUU"], 1)  # a 2-base tail is dropped
    assert hf_texts(seqs, "rna", "codon", " ", 1) == (["UGG CCU", "AUG"], 2)  # frame 1: both lose a tail
    assert hf_texts(["ACGT"], "rna", "base", " ", 0) == (["A C G U"], 0)


def test_length_limit_is_the_smaller_sane_one():
    from types import SimpleNamespace as NS

    assert hf_max_len(NS(max_position_embeddings=512), NS(model_max_length=int(1e30))) == (
        512, "config.max_position_embeddings")  # fmt: skip
    assert hf_max_len(NS(max_position_embeddings=514), NS(model_max_length=512)) == (512, "tokenizer.model_max_length")
    assert hf_max_len(NS(), NS(model_max_length=int(1e30))) == (None, None)


def test_cluster_hf(hf_dir, tiny_runs, shared_data, tmp_path):
    """`helm cluster --hf`: synonymous variants embedded by the checkpoint; the JSON names it like probe's."""
    common = ["--reference", str(shared_data / "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"),
              "--num-proteins", "3", "--variants", "3"]  # fmt: skip
    for source, out in ((["--hf", str(hf_dir)], tmp_path / "hf.json"), (["--run", str(tiny_runs["mlm"])], None)):
        out = out or tmp_path / "native.json"
        assert helm_main(["cluster", *source, *common, "--out", str(out)]) == 0
    hf, native = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("hf", "native"))
    assert hf["run"] == "hf:tiny-bert" and hf["config"]["hf"]["name"] == "tiny-bert" and native["config"]["hf"] is None
    assert set(hf["metrics"]) == set(native["metrics"]) and hf["metrics"]["num_sequences"] == 9
    from helm.downstream.cluster import variant_sets
    from helm.downstream.generate import read_reference

    seqs, _ = variant_sets(read_reference(common[1], 15)[0], 3, 3, 0)
    assert hf["metrics"]["n_truncated"] == sum(len(s) // 3 + 2 > 64 for s in seqs) > 0  # [CLS] codons [SEP] > 64


def test_missing_weights_are_reported(hf_dir, shared_data, tmp_path, capsys):
    """A folder whose config asks for more layers than its weights hold: transformers initialises the rest at
    random; the features are then partly random, which is said on stderr and recorded."""
    import shutil

    from helm.downstream.features import load_features

    bigger = shutil.copytree(hf_dir, tmp_path / "bigger")
    config = json.loads((bigger / "config.json").read_text())
    (bigger / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    out = tmp_path / "f.safetensors"
    argv = ["embed", "--hf", str(bigger), *DATASET, "--mirror", str(shared_data), "--out", str(out), "--quiet"]
    assert helm_main(argv) == 0
    assert "weight(s) missing from the checkpoint were randomly initialised" in capsys.readouterr().err
    assert load_features(out).meta["hf"]["missing_weights"] > 0


@pytest.mark.parametrize("mode", ["mlm", "clm"])
def test_our_own_export_probed_as_a_foreign_checkpoint_scores_like_the_native_run(tiny_runs, shared_data, tmp_path,
                                                                                  mode):  # fmt: skip
    """`helm export` + `helm probe --hf` is the same model through the same harness: identical scores."""
    exported = tmp_path / "hf" / f"tiny-{mode}"
    assert helm_main(["export", str(tiny_runs[mode]), str(exported)]) == 0
    results = {}
    for name, source in (("native", ["--run", str(tiny_runs[mode])]),
                         ("hf", ["--hf", str(exported), "--trust-remote-code"])):  # fmt: skip
        out = tmp_path / f"{name}.json"
        argv = ["probe", *source, *DATASET, "--mirror", str(shared_data), "--seed", "0", *RIDGE, "--out", str(out)]
        assert helm_main(argv) == 0
        results[name] = json.loads(out.read_text())
    native, hf = results["native"], results["hf"]
    assert hf["run"] == f"hf:tiny-{mode}" and native["run"] == tiny_runs[mode].name
    assert hf["metrics"]["spearman"] == native["metrics"]["spearman"]
    assert hf["metrics"]["n_truncated"] == native["metrics"]["n_truncated"]
    assert hf["predictions"]["test_pred"] == native["predictions"]["test_pred"]
