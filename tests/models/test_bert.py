"""bert against transformers.BertModel built independently from the same numbers and given our weights."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from helm.models import create_model


@pytest.mark.parametrize("bidirectional", [True, False])
def test_matches_hf_bertmodel(bidirectional):
    torch.manual_seed(0)
    ours = create_model(
        "bert", hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_seq_len=30,
        activation="gelu", bidirectional=bidirectional, pad_vocab_size_multiple=8,
    ).eval()  # fmt: skip
    hf = BertModel(
        BertConfig(vocab_size=72, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                   max_position_embeddings=30, type_vocab_size=1, hidden_dropout_prob=0, attention_probs_dropout_prob=0,
                   is_decoder=not bidirectional),
        add_pooling_layer=False,
    ).eval()  # fmt: skip
    hf.load_state_dict(ours.bert.state_dict(), strict=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 70, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = ours.embed(ids, mask)
        logits = ours(ids, mask)
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-5, rtol=1e-5)
    assert logits.shape == (2, 12, 70)


def test_other_position_schemes_raise():
    with pytest.raises(ValueError, match="bert uses its own learned absolute positions"):
        create_model("bert", preset="bert-tiny", pos_embedding="rotary")
