"""The evaluation commands' typed settings (helm/downstream/command.py): every field is a flag in both spellings
with its docstring as help, the parsed settings are the typed dataclass, the JSON records the settings from the
dataclass, and the one head trainer (harness.train_head) trains annotate's token classifier exactly as the loop
it replaced."""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np
import pytest
import torch

from helm.args import field_docs
from helm.downstream.command import EvalRecord, parse, recorded

COMMANDS = {
    "embed": ("helm.downstream.features", "EmbedSettings", ["--run", "R", "--dataset", "d", "--out", "o"]),
    "probe": ("helm.downstream.probe", "ProbeSettings", ["--run", "R", "--dataset", "d", "--out", "o"]),
    "baseline": ("helm.downstream.baselines", "BaselineSettings", ["--kind", "kmer-ridge", "--dataset", "d",
                                                                   "--out", "o"]),
    "annotate": ("helm.downstream.annotate", "AnnotateSettings", ["--run", "R", "--out", "o"]),
    "cluster": ("helm.downstream.cluster", "ClusterSettings", ["--run", "R", "--reference", "x", "--out", "o"]),
    "generate": ("helm.downstream.generate", "GenerateSettings", ["--run", "R", "--reference", "x", "--out", "o"]),
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_field_is_a_documented_flag_and_parses_to_the_settings(command):
    module_name, cls_name, needed = COMMANDS[command]
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    parser = module.build_parser()
    text = parser.format_help()
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert docs.get(f.name), f"{cls_name}.{f.name} has no docstring (its --help)"
        for flag in (f"--{f.name}", f"--{f.name.replace('_', '-')}"):
            assert flag in text, f"helm {command}: {flag} not in --help"
    settings = parse(parser, needed)
    assert type(settings) is cls
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(cls)}  # fmt: skip
    given = dict(zip([w[2:].replace("-", "_") for w in needed[::2]], needed[1::2]))
    assert dataclasses.asdict(settings) == {**defaults, **given}


def test_typed_values_and_checks():
    from helm.downstream.probe import build_parser, recorded_settings

    s = parse(build_parser(), ["--run", "R", "--dataset", "d", "--out", "o", "--lrs", "1e-3", "2e-4",
                               "--batch_sizes", "8", "--head", "RIDGE", "--max-rows", "50"])  # fmt: skip
    assert (s.lrs, s.batch_sizes, s.head, s.max_rows) == ([1e-3, 2e-4], [8], "ridge", 50)
    rec = recorded_settings(s)  # a ridge probe records no head grid and no backbone lr, but its alphas
    assert rec["lrs"] is None and rec["epochs"] is None and rec["backbone_lr"] is None
    assert rec["alphas"] == s.alphas and rec["max_rows"] == 50 and rec["head"] == "ridge"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--features", "F", "--finetune", "full"], "F: --finetune full needs the model (--run/--hf), not features"),
        (["--run", "R", "--head", "ridge", "--finetune", "lora"], "--head ridge is a frozen-feature probe"),
        (["--run", "R", "--features", "F"], "give exactly one of --run, --hf, --features (got --run and --features)"),
    ],
)
def test_a_bad_combination_is_one_line_exit_2_before_any_work(argv, message, tmp_path, capsys):
    from helm.downstream.probe import main

    out = tmp_path / "p.json"
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--dataset", "no-such-set", "--out", str(out)])  # the dataset would fail later
    err = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith(f"helm probe: error: {message}")
    assert not out.exists()


def test_recorded_settings_come_from_the_dataclass_and_never_clash_with_provenance():
    from helm.downstream.generate import build_parser

    s = parse(build_parser(), ["--run", "R", "--reference", "x", "--out", "o", "--prompt", "codons"])
    assert recorded(s, ("prompt", "prompt_codons", "top_k")) == {"prompt": "codons", "prompt_codons": 30, "top_k": 10}
    assert recorded(s, ("prompt_codons",), {"prompt_codons": False}) == {"prompt_codons": None}
    record = EvalRecord("r", "t", 0, {}, {"top_k": 10}, {"top_k": 3})
    with pytest.raises(RuntimeError, match="top_k"):
        record.to_json()
    assert "predictions" not in EvalRecord("r", "t", 0, {}, {}, {}).to_json()


def _old_annotate_loop(head, feats, y, parts, epochs, patience, lr, batch_size, seed, report):
    """The token-classifier loop `helm annotate` had before it used harness.train_head (written out again)."""
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)

    def predict(rows):
        head.eval()
        with torch.no_grad():
            logits = head(feats[rows].float())
        keep = y[rows] != -100
        return y[rows][keep].numpy(), logits.argmax(-1)[keep].numpy()

    best, best_state, best_epoch, since = -math.inf, None, -1, 0
    gen = torch.Generator().manual_seed(seed)
    train_rows = torch.as_tensor(parts["train"])
    for epoch in range(epochs):
        head.train()
        perm = train_rows[torch.randperm(len(train_rows), generator=gen)]
        for start in range(0, len(perm), batch_size):
            rows = perm[start : start + batch_size]
            loss = loss_fn(head(feats[rows].float()).flatten(0, 1), y[rows].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        f1 = report(*predict(torch.as_tensor(parts["val"])))["macro_f1"]
        if f1 > best:
            best, best_epoch, since = f1, epoch, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    head.load_state_dict(best_state)
    return best_epoch, {p: report(*predict(torch.as_tensor(parts[p]))) for p in ("val", "test")}


@pytest.mark.parametrize("hidden, batch_size", [(0, 8), (16, 13)])  # 13: a last batch of one row (40 = 3 * 13 + 1)
def test_annotate_trains_its_head_as_the_loop_it_replaced(hidden, batch_size):
    from helm.downstream.annotate import CLASSES, AnnotateSettings, classification_report, train_token_head
    from helm.downstream.heads import TokenHead

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 12, 16, generator=g)
    y = torch.randint(0, len(CLASSES), (50, 12), generator=g)
    y[:, 0] = -100  # <cls>
    y[::3, 9:] = -100  # pads
    order = np.random.default_rng(1).permutation(50)
    parts = {"test": order[:5], "val": order[5:10], "train": order[10:]}  # 40 train rows
    args = AnnotateSettings(run="R", out="o", epochs=12, patience=3, lr=3e-3, batch_size=batch_size, hidden=hidden,
                            seed=2)  # fmt: skip
    torch.manual_seed(5)
    reports, best_epoch = train_token_head(args, feats, y, parts)
    torch.manual_seed(5)
    head = TokenHead(16, len(CLASSES), hidden=hidden)
    old_epoch, old_reports = _old_annotate_loop(head, feats, y, parts, 12, 3, 3e-3, batch_size, 2,
                                                classification_report)  # fmt: skip
    assert best_epoch == old_epoch and reports == old_reports
