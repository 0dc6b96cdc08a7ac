"""An export as a Hugging Face user meets it (issue 22, points 1, 3, 4 and 5), on a run trained by the real
`train.py` on real OAS CDS: fill-mask answers codons with helm's scores, the model card is what the Hub reads,
README's own snippet runs without a prompt or a warning, and every file has the user's umask.

Everything on the transformers side runs in ONE subprocess that cannot import helm (as tests/test_export.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helm_free import NO_HELM, helm_free_env
from train_utils import REPO, run_train, tiny_args, write_oas_txt

from helm import run
from helm.codons import CLS_ID, EOS_ID, MASK_ID
from helm.export import export_run

pytestmark = pytest.mark.slow

UMASK = 0o027  # not the usual 022: files must follow the user's umask, not a mode chosen by a library
TRAIN_FLAGS = ("--mode", "mlm", "--loss", "HXE", "--hxe-alpha", "0.4", "--epochs", "3", "--seed", "3")

# the transformers side of the fixture (after NO_HELM): fill-mask on the trained export, its card as the Hub reads it
CHECK = r"""
from huggingface_hub import ModelCard
from transformers import pipeline

case = json.load(open(sys.argv[1]))
fill = pipeline("fill-mask", model=case["out"], trust_remote_code=True)
card = ModelCard.load(case["out"] + "/README.md")
results = {
    "fill": fill(case["masked"], top_k=5),
    "card": card.data.to_dict(),
    "eval": [[r.dataset_split, r.metric_name, r.metric_type, r.metric_value] for r in card.data.eval_results or []],
}
json.dump(results, open(sys.argv[2], "w"))
"""


def helm_free(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter that cannot import helm (tests/helm_free.py), stdin closed."""
    return subprocess.run([sys.executable, "-c", NO_HELM + script, *args], cwd=cwd, env=helm_free_env(cwd),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def hub(shared_data, tmp_path_factory) -> dict:
    """A real 3-epoch MLM HXE run trained and exported under umask 027, and what transformers made of it."""
    from helm.prepare import prepare

    tmp = tmp_path_factory.mktemp("hub")
    prep = tmp / "prep"
    prepare(train_files=[write_oas_txt(shared_data, tmp / "oas.txt")], output=prep, progress=False)
    args = tiny_args(prep, tmp / "run", *TRAIN_FLAGS)
    done = run_train(args, timeout=1800, preexec_fn=lambda: os.umask(UMASK))
    assert done.returncode == 0, done.stderr[-3000:]
    old = os.umask(UMASK)
    try:
        out = export_run(tmp / "run", tmp / "hf-hub")
    finally:
        os.umask(old)

    trained = run.load_run(tmp / "run")
    cds = (tmp / "oas.txt").read_text().split()[-1][:60]  # a test-split-like real CDS: 20 codons
    masked = cds[:27] + "<mask>" + cds[30:]  # codon 10 masked
    ids = [CLS_ID, *trained.tokenizer.encode(cds[:27]).tolist(), MASK_ID, *trained.tokenizer.encode(cds[30:]).tolist(),
           EOS_ID]  # fmt: skip
    with torch.no_grad():
        probs = trained.model(torch.tensor([ids]))[0, 10].softmax(-1)
    top = probs.topk(5)
    (tmp / "case.json").write_text(json.dumps({"out": str(out), "masked": masked}))
    proc = helm_free(CHECK, str(tmp / "case.json"), str(tmp / "results.json"), cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"tmp": tmp, "out": out, "run": tmp / "run", "args": args, "masked": masked, "run_obj": trained,
            "top_ids": top.indices.tolist(), "top_scores": top.values.tolist(),
            "results": json.loads((tmp / "results.json").read_text())}  # fmt: skip


def test_fill_mask_on_a_masked_codon_returns_codons_with_helm_scores(hub):
    got, vocab = hub["results"]["fill"], hub["run_obj"].tokenizer.vocab.tokens
    assert [r["token"] for r in got] == hub["top_ids"]
    np.testing.assert_allclose([r["score"] for r in got], hub["top_scores"], rtol=1e-5, atol=1e-7)
    for r in got:
        assert re.fullmatch("[ACGT]{3}", r["token_str"]) and r["token_str"] == vocab[r["token"]]
        assert r["sequence"] == hub["masked"].replace("<mask>", r["token_str"])


def test_model_card_header_is_what_the_hub_reads_with_metrics_json_values(hub):
    data, metrics = hub["results"]["card"], run.read_metrics(hub["run"])
    assert data["license"] == "mit" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "fill-mask"
    assert {"helm-mrna", "mrna", "codon", "gpt2", "custom_code"} <= set(data["tags"])
    assert data["datasets"] == ["oas"]  # the corpus file the run was prepared from
    assert {"perplexity", "accuracy"} <= set(data["metrics"])
    evals = {(split, name): (kind, value) for split, name, kind, value in hub["results"]["eval"]}
    for split, prefix in (("test", "test"), ("validation", "val")):
        assert evals[(split, "codon perplexity")] == ("perplexity", pytest.approx(metrics[f"{prefix}_ppl"], abs=1e-6))
        assert evals[(split, "codon accuracy")] == ("accuracy", pytest.approx(metrics[f"{prefix}_acc"], abs=1e-6))
        assert evals[(split, "amino-acid accuracy")][1] == pytest.approx(metrics[f"{prefix}_aa_acc"], abs=1e-6)
        assert evals[(split, "mistake severity")][1] == pytest.approx(metrics[f"{prefix}_mistake_severity"], abs=1e-6)


def test_model_card_body_says_what_was_trained_how_and_how_to_load_it(hub):
    body = (hub["out"] / "README.md").read_text().split("\n---\n", 1)[1]
    metrics, summary = run.read_metrics(hub["run"]), json.loads((hub["tmp"] / "prep" / "summary.json").read_text())
    for text in (
        "gpt2 (bidirectional, MLM)",
        f"{metrics['num_parameters']:,} parameters (2 layers x 32, context 48)",
        "3mer (70 tokens",
        "HXE (hierarchical cross-entropy), alpha 0.4, true codon tree",
        f"oas: {summary['kept_total']:,} sequences",
        f"{summary['tokens']['train']:,} training tokens)",
        f"{metrics['steps']:,} optimizer updates, {int(metrics['train_tokens']):,} training tokens",
        f"{metrics['test_ppl']:.4g}",
        'pipeline("fill-mask", model=MODEL, trust_remote_code=True)',
        "## Limitations",
    ):
        assert text in body, text
    command = re.search(r"## Training command\n\n```bash\n(.*?)\n```", body, re.S).group(1)
    assert command == shlex.join(["helm", "train", *hub["args"]])  # the exact command, as typed


def test_exported_and_run_files_get_the_users_umask(hub):
    for folder in (hub["run"], hub["out"]):
        for path in [folder, *folder.rglob("*")]:
            want = (0o777 if path.is_dir() else 0o666) & ~UMASK
            assert path.stat().st_mode & 0o777 == want, f"{path}: {oct(path.stat().st_mode & 0o777)}"


def test_readme_snippet_runs_without_prompt_or_type_warning(hub):
    """README's Hugging Face snippet, verbatim but for its folder, with transformers' default verbosity."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Hugging Face export", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'OUT = "results/hf/my-run"' in snippet and 'pipeline("fill-mask"' in snippet
    snippet = snippet.replace('OUT = "results/hf/my-run"', f"OUT = {str(hub['out'])!r}")
    proc = helm_free(snippet + "\nprint('snippet ok', len(logits), len(hidden))", cwd=hub["tmp"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "snippet ok" in proc.stdout, output[-3000:]
    assert "Do you wish to run the custom code" not in output
    assert "You are using a model of type" not in output
