"""Region labels read from the real OAS file and aligned with the framed tokens."""

from __future__ import annotations

import pytest

from helm.downstream.annotate import CLASSES, classification_report, read_oas_regions, token_labels
from helm.downstream.embed import InputError, encode
from helm.tokenizers import create_tokenizer

OAS = "pretrain/oas_parameswaran2013_heavy_100k.csv.gz"


def test_labels_follow_tokens(shared_data):
    cds, labels, _ = read_oas_regions(shared_data / OAS, 20)
    assert len(cds) == 20 and all(len(c) == 3 * len(lab) for c, lab in zip(cds, labels))
    assert all("cdr3" in lab for lab in labels)  # CDR3 is annotated in nearly every row
    codon = create_tokenizer("3mer")
    enc = encode(codon, cds, 512, mode="mlm")
    y = token_labels(labels, codon, enc.ids.shape[1], "mlm")
    for i, lab in enumerate(labels):
        n = len(lab)
        assert y[i, 0] == -100 and y[i, n + 1 :].eq(-100).all()  # <cls>, <eos> and pads carry no label
        assert [CLASSES[c] for c in y[i, 1 : n + 1].tolist()] == lab
    nuc = create_tokenizer("nuc")
    enc = encode(nuc, cds, 2048, mode="clm")
    y = token_labels(labels, nuc, enc.ids.shape[1], "clm")
    for i, lab in enumerate(labels):
        bases = [CLASSES[c] for c in y[i, 1 : 1 + 3 * len(lab)].tolist()]
        assert bases == [r for r in lab for _ in range(3)]  # each base carries its codon's region
    with pytest.raises(InputError, match="needs a codon"):
        token_labels(labels, create_tokenizer("6mer"), 10, "mlm")


def test_classification_report_per_region():
    import numpy as np

    y = np.array([0, 0, 1, 1, 1, 5])
    pred = np.array([0, 1, 1, 1, 0, 5])
    m = classification_report(y, pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["acc_fwr1"] == 0.5 and m["acc_cdr1"] == pytest.approx(2 / 3) and m["acc_cdr3"] == 1.0
    # macro F1 over the three classes present: F1(0)=0.5, F1(1)=2/3, F1(5)=1
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
