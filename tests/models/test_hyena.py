"""Hyena: the FFT long convolution against direct convolution; the implicit filter's shape and decay."""

from __future__ import annotations

import pytest
import torch

from helm.models.config import ModelConfig
from helm.models.hyena import HyenaOperator, ImplicitFilter, fft_long_conv


def direct_conv(v, h_past, h_future=None):
    """y[t] = sum_{s<=t} h_past[t-s] v[s] + sum_{s>t} h_future[s-t] v[s], by loops. v [B, C, L], h [C, L]."""
    length = v.shape[-1]
    y = torch.zeros_like(v)
    for t in range(length):
        for s in range(length):
            if s <= t:
                y[..., t] += h_past[:, t - s] * v[..., s]
            elif h_future is not None:
                y[..., t] += h_future[:, s - t] * v[..., s]
    return y


@pytest.mark.parametrize("length", [1, 7, 16, 33])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_equals_direct_convolution(length, bidirectional):
    g = torch.Generator().manual_seed(length)
    v = torch.randn(2, 3, length, generator=g, dtype=torch.float64)
    h_past = torch.randn(3, length, generator=g, dtype=torch.float64)
    h_future = torch.randn(3, length, generator=g, dtype=torch.float64) if bidirectional else None
    torch.testing.assert_close(fft_long_conv(v, h_past, h_future), direct_conv(v, h_past, h_future))


def test_fft_conv_float32_and_bf16_inputs():
    v = torch.randn(1, 4, 50)
    h = torch.randn(4, 50)
    ref = direct_conv(v.double(), h.double()).float()
    torch.testing.assert_close(fft_long_conv(v, h), ref, atol=1e-4, rtol=1e-4)
    assert fft_long_conv(v.bfloat16(), h).dtype == torch.bfloat16


def test_implicit_filter_decays_and_is_length_consistent():
    torch.manual_seed(0)
    filt = ImplicitFilter(channels=8, max_len=100, emb_dim=9, order=16, num_filters=2)
    filt.reset_special_parameters()
    long, short = filt(100, torch.device("cpu")), filt(30, torch.device("cpu"))
    assert len(long) == 2 and long[0].shape == (8, 100)
    torch.testing.assert_close(long[1][:, :30], short[1])  # a filter tap depends on its offset only
    # the exponential window: late taps are much smaller than early ones for the fastest channel
    assert long[0][0, 80:].abs().max() < 0.1 * long[0][0, :5].abs().max()


def test_operator_bidirectional_has_future_filter():
    op = HyenaOperator(ModelConfig(hidden_size=16, bidirectional=True, filter_emb_dim=5, filter_order=8))
    assert op.filter.num_filters == 2 and op.short_filter.padding == (1,)
    assert op(torch.randn(2, 10, 16), None).shape == (2, 10, 16)
