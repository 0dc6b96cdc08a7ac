"""Heads: masking must make the output independent of padding (brute force: each row alone, unpadded)."""

from __future__ import annotations

import pytest
import torch

from helm.downstream.heads import LinearProbe, MLPProbe, TextCNN, TokenHead, build_head


def padded_batch(lengths, dim, pad_width, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(n, dim, generator=g) for n in lengths]
    x = torch.randn(len(rows), pad_width, dim, generator=g) * 100  # garbage in the pads
    mask = torch.zeros(len(rows), pad_width, dtype=torch.bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        mask[i, : len(r)] = True
    return rows, x, mask


@pytest.mark.parametrize("cls", [TextCNN, LinearProbe, MLPProbe])
def test_output_ignores_padding(cls):
    torch.manual_seed(0)
    head = cls(8).eval()
    rows, x, mask = padded_batch([2, 5, 9, 12], 8, pad_width=15)
    batched = head(x, mask)
    alone = torch.stack([head(r[None], torch.ones(1, len(r), dtype=torch.bool))[0] for r in rows])
    torch.testing.assert_close(batched, alone)


def test_textcnn_matches_definition():
    """proj d->2d, conv k=3,4,5 x 100, ReLU, max over positions, concat 300, linear -- written out by hand."""
    torch.manual_seed(1)
    head = TextCNN(6).eval()
    x = torch.randn(1, 10, 6)
    h = head.proj(x[0])  # [10, 12]
    feats = []
    for conv in head.convs:
        k = conv.kernel_size[0]
        w, b = conv.weight, conv.bias  # [100, 12, k]
        windows = torch.stack([(w * h[t : t + k].T[None]).sum((1, 2)) + b for t in range(10 - k + 1)])
        feats.append(torch.relu(windows).max(0).values)
    expected = head.out(torch.cat(feats))
    assert head.proj.out_features == 12 and sum(c.out_channels for c in head.convs) == 300
    torch.testing.assert_close(head(x, torch.ones(1, 10, dtype=torch.bool)), expected.squeeze(-1)[None])


def test_textcnn_handles_rows_shorter_than_kernel():
    head = TextCNN(4).eval()
    out = head(torch.randn(3, 2, 4), torch.tensor([[True, True], [True, False], [True, True]]))
    assert torch.isfinite(out).all()


def test_build_head_and_token_head():
    assert isinstance(build_head("mlp", 4), MLPProbe)
    with pytest.raises(ValueError, match="unknown head"):
        build_head("svm", 4)
    assert TokenHead(4, 8, hidden=16)(torch.randn(2, 5, 4)).shape == (2, 5, 8)
