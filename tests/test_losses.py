"""Losses against brute-force implementations of their definitions (helm/losses/kernels.py), in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tree_utils import tree_paths

from helm.codons import (
    GENETIC_CODE,
    SPECIALS,
    Tree,
    codon_tree,
    codon_vocab,
    flat_tree,
    kmer_tree,
    kmer_vocab,
    nuc_vocab,
)
from helm.losses import build_loss, canonical_loss_name, list_losses
from helm.losses.kernels import HXELoss, SoftLabelsLoss

# ------------------------------------------------------------------------------------ brute-force references


def _leaves_under(tree: Tree, paths: list[list[int]]) -> dict[int, list[int]]:
    under: dict[int, list[int]] = {}
    for v, path in enumerate(paths):
        for node in path:
            under.setdefault(node, []).append(v)
    return under


def brute_hxe(tree: Tree, z: torch.Tensor, y: torch.Tensor, alpha: float, normalize: bool) -> torch.Tensor:
    """Mean over rows with y != -100 of -sum_{k<h} lambda(C_k) log(p(C_k) / p(C_k+1)), one row at a time."""
    paths = tree_paths(tree)
    under = _leaves_under(tree, paths)
    depth = {}
    for path in paths:
        for i, node in enumerate(path):
            depth[node] = len(path) - 1 - i
    assert len(depth) == tree.num_nodes  # every node lies on some leaf's path
    z_norm = sum(math.exp(-alpha * d) for d in depth.values()) if normalize else 1.0
    losses = []
    for n in range(z.shape[0]):
        c = int(y[n])
        if c == -100:
            continue
        log_p = torch.log_softmax(z[n], dim=0)
        path = paths[c]
        total = z.new_zeros(())
        for k in range(len(path) - 1):
            lam = math.exp(-alpha * depth[path[k]]) / z_norm
            log_pk = torch.logsumexp(log_p[under[path[k]]], dim=0)
            log_pk1 = torch.logsumexp(log_p[under[path[k + 1]]], dim=0)
            total = total - lam * (log_pk - log_pk1)
        losses.append(total)
    return torch.stack(losses).mean()


def brute_lca_height(tree: Tree) -> np.ndarray:
    """d(i, j): longest leaf distance below the lowest common ancestor, found by intersecting explicit paths."""
    paths = tree_paths(tree)
    under = _leaves_under(tree, paths)
    depth_of_leaf = [len(p) - 1 for p in paths]
    node_depth = {node: len(p) - 1 - i for p in paths for i, node in enumerate(p)}
    height = {node: max(depth_of_leaf[v] for v in leaves) - node_depth[node] for node, leaves in under.items()}
    v = tree.vocab_size
    out = np.zeros((v, v), dtype=np.int64)
    for i in range(v):
        on_path = set(paths[i])
        for j in range(v):
            lca = next(node for node in paths[j] if node in on_path)
            out[i, j] = height[lca]
    return out


def _data(v: int, n: int = 48, scale: float = 3.0, seed: int = 0, ignore: int = 6):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, v, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=gen)
    y[torch.randperm(n, generator=gen)[:ignore]] = -100  # positions that must not count
    return z, y


def _value_and_grad(fn, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().clone().requires_grad_(True)
    loss = fn(z, y)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


# -------------------------------------------------------------------------------------------------- HXE


@pytest.mark.parametrize("hierarchy", ["true", "random"])
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.6, 2.0])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dense", [True, False], ids=["matmul", "grouped"])  # both kernels
def test_hxe_matches_brute_force_codon(hierarchy: str, alpha: float, normalize: bool, dense: bool) -> None:
    tree = codon_tree(codon_vocab(), hierarchy, seed=7)
    z, y = _data(tree.vocab_size)
    ours = _value_and_grad(HXELoss(tree, alpha, normalize, dense=dense), z, y)
    ref = _value_and_grad(lambda a, b: brute_hxe(tree, a, b, alpha, normalize), z, y)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-9)


@pytest.mark.parametrize("hierarchy", ["true", "random"])
def test_hxe_matches_brute_force_6mer(hierarchy: str) -> None:
    vocab = kmer_vocab(6)
    tree = kmer_tree(vocab, hierarchy, seed=3)
    z, y = _data(len(vocab), n=12, ignore=2)
    ours = _value_and_grad(build_loss("hxe", vocab, hxe_alpha=0.4, hierarchy=hierarchy, seed=3), z, y)
    ref = _value_and_grad(lambda a, b: brute_hxe(tree, a, b, 0.4, True), z, y)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-9)
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-9)


def test_hxe_flat_tree_is_scaled_xe() -> None:
    v, alpha = 70, 0.3
    z, y = _data(v)
    keep = y != -100
    xe = F.cross_entropy(z[keep], y[keep])
    lam_leaf = math.exp(-alpha) / (1 + v * math.exp(-alpha))  # Z = root + v leaves at depth 1
    torch.testing.assert_close(HXELoss(flat_tree(v), alpha, normalize=True)(z, y), lam_leaf * xe, rtol=1e-12, atol=0)
    torch.testing.assert_close(HXELoss(flat_tree(v), alpha, normalize=False)(z, y), math.exp(-alpha) * xe)


def test_hxe_alpha_zero_limit() -> None:
    """Documented: alpha -> 0 gives XE / Z (Z = number of nodes), and exactly XE when not normalized."""
    tree = codon_tree()
    z, y = _data(tree.vocab_size)
    keep = y != -100
    xe = F.cross_entropy(z[keep], y[keep])
    torch.testing.assert_close(HXELoss(tree, 0.0, normalize=False)(z, y), xe, rtol=1e-12, atol=0)
    torch.testing.assert_close(HXELoss(tree, 0.0)(z, y), xe / tree.num_nodes, rtol=1e-12, atol=0)
    near = HXELoss(tree, 1e-7)(z, y)
    torch.testing.assert_close(near, xe / tree.num_nodes, rtol=1e-5, atol=0)


def test_hxe_larger_alpha_weights_top_levels_more() -> None:
    """A mistake inside the right amino acid costs relatively less than one across groups when alpha grows."""
    tree = codon_tree()
    vocab = codon_vocab()
    target = vocab.index["CTG"]  # Leu
    z = torch.zeros(2, len(vocab), dtype=torch.float64)
    z[0, vocab.index["CTT"]] = 8.0  # synonymous mistake
    z[1, vocab.index["AAA"]] = 8.0  # Lys: a different amino acid
    y = torch.full((1,), target)
    ratios = []
    for alpha in (0.0, 0.5, 1.0):
        loss = HXELoss(tree, alpha)
        ratios.append(float(loss(z[1:], y) / loss(z[:1], y)))
    assert ratios[0] < ratios[1] < ratios[2]


@pytest.mark.parametrize("dense", [True, False], ids=["matmul", "grouped"])
def test_hxe_stable_for_confident_logits(dense: bool) -> None:
    """logits * 1e3, targets both the most and the least likely token: finite and equal to the float64 definition."""
    tree = codon_tree()
    gen = torch.Generator().manual_seed(1)
    z64 = torch.randn(40, tree.vocab_size, generator=gen, dtype=torch.float64) * 1e3
    y = torch.cat([z64[:20].argmax(1), z64[20:].argmin(1)])
    y[10] = z64[10].argsort()[-2]  # the runner-up, within the matmul kernel's margin
    loss = HXELoss(tree, 0.6, dense=dense)
    ref = _value_and_grad(lambda a, b: brute_hxe(tree, a, b, 0.6, True), z64, y)
    exact = _value_and_grad(loss, z64, y)
    torch.testing.assert_close(exact[0], ref[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(exact[1], ref[1], rtol=0, atol=1e-12)
    val32, grad32 = _value_and_grad(loss, z64.float(), y)
    assert val32.dtype == torch.float32 and torch.isfinite(val32) and torch.isfinite(grad32).all()
    torch.testing.assert_close(val32.double(), ref[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grad32.double(), ref[1], rtol=0, atol=1e-6)


def test_hxe_bf16_autocast_reduces_in_float32() -> None:
    tree = codon_tree()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 16, generator=gen)
    head = torch.nn.Linear(16, tree.vocab_size)
    y = torch.randint(0, tree.vocab_size, (64,), generator=gen)
    loss_fn = HXELoss(tree, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x)
        assert logits.dtype == torch.bfloat16
        loss = loss_fn(logits, y)
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.dtype == torch.bfloat16
    ref = _value_and_grad(lambda a, b: brute_hxe(tree, a, b, 0.2, True), logits.detach().double(), y)
    torch.testing.assert_close(loss.double(), ref[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(grad.double(), ref[1], rtol=1e-2, atol=1e-5)


# ------------------------------------------------------------------------------------------- soft labels


def test_soft_label_targets_definition() -> None:
    tree = codon_tree(hierarchy="random", seed=5)
    d = brute_lca_height(tree)
    assert (np.diag(d) == 0).all() and (d == d.T).all()
    beta = 15.0
    loss = SoftLabelsLoss(tree, beta)
    q = loss._targets64.numpy()
    w = np.exp(-beta * d / d.max())
    np.testing.assert_allclose(q, w / w.sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    assert (q.argmax(1) == np.arange(tree.vocab_size)).all()  # the target itself gets the most mass
    sharper = SoftLabelsLoss(tree, 30.0)._targets64.numpy()
    assert (np.diag(sharper) > np.diag(q)).all()  # higher beta = sharper


def test_soft_labels_value_and_grad() -> None:
    tree = codon_tree()
    d = brute_lca_height(tree)
    z, y = _data(tree.vocab_size)

    def brute(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        keep = b != -100
        w = torch.exp(-15.0 * torch.as_tensor(d, dtype=torch.float64) / d.max())
        q = (w / w.sum(1, keepdim=True))[b[keep]]
        return -(q * torch.log_softmax(a[keep], 1)).sum(1).mean()

    ours = _value_and_grad(SoftLabelsLoss(tree, 15.0), z, y)
    ref = _value_and_grad(brute, z, y)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-12)
    # beta -> infinity: one-hot targets, plain XE
    keep = y != -100
    torch.testing.assert_close(SoftLabelsLoss(tree, 1e4)(z, y), F.cross_entropy(z[keep], y[keep]))


def test_soft_labels_confident_and_bf16() -> None:
    tree = codon_tree()
    z = torch.randn(32, tree.vocab_size) * 1e3
    y = torch.cat([z[:16].argmax(1), z[16:].argmin(1)])
    val, grad = _value_and_grad(SoftLabelsLoss(tree), z, y)
    ref = _value_and_grad(SoftLabelsLoss(tree), z.double(), y)
    assert torch.isfinite(val) and torch.isfinite(grad).all()
    torch.testing.assert_close(val.double(), ref[0], rtol=1e-5, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SoftLabelsLoss(tree)(z.bfloat16(), y)
    assert out.dtype == torch.float32


# ----------------------------------------------------------------------------------------- amino acids


def _synonyms() -> list[list[int]]:
    """Per codon-vocabulary token, the tokens encoding the same amino acid (specials: only themselves)."""
    vocab = codon_vocab()
    label = [tok if tok in SPECIALS else GENETIC_CODE[tok] for tok in vocab.tokens]
    return [[j for j, other in enumerate(label) if other == lab] for lab in label]


@pytest.mark.parametrize("name", ["aa_loss_only", "aa_loss_add"])
def test_aa_losses_marginalize_synonymous_codons(name: str) -> None:
    vocab = codon_vocab()
    syn = _synonyms()
    z, y = _data(len(vocab))

    def brute(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        rows = []
        for n in range(a.shape[0]):
            if b[n] == -100:
                continue
            p = torch.softmax(a[n], 0)
            aa = -torch.log(p[syn[int(b[n])]].sum())
            rows.append(aa - torch.log(p[b[n]]) if name == "aa_loss_add" else aa)
        return torch.stack(rows).mean()

    ours = _value_and_grad(build_loss(name, vocab), z, y)
    ref = _value_and_grad(brute, z, y)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- factory / inputs


def test_factory_names_and_vocab_checks() -> None:
    assert list_losses() == ["XE", "HXE", "soft_labels", "aa_loss_add", "aa_loss_only"]
    for spelled, canonical in [
        ("xe", "XE"),
        ("HxE", "HXE"),
        ("soft-labels", "soft_labels"),
        ("AA_LOSS_ADD", "aa_loss_add"),
    ]:
        assert canonical_loss_name(spelled) == canonical
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal", codon_vocab())
    for name in ["HXE", "soft_labels", "aa_loss_add", "aa_loss_only"]:
        with pytest.raises(ValueError, match="nuc"):
            build_loss(name, nuc_vocab())
    z, y = _data(len(nuc_vocab()))
    keep = y != -100
    torch.testing.assert_close(build_loss("XE", nuc_vocab())(z, y), F.cross_entropy(z[keep], y[keep]))


@pytest.mark.parametrize("name", ["XE", "HXE", "soft_labels", "aa_loss_add", "aa_loss_only"])
def test_ignored_positions_never_count(name: str) -> None:
    vocab = codon_vocab()
    loss_fn = build_loss(name, vocab, hierarchy="random")
    z, y = _data(len(vocab))
    z3, y3 = z.detach().reshape(4, 12, -1), y.reshape(4, 12)  # [B, L, V] batches work too
    base, grad = _value_and_grad(loss_fn, z3, y3)
    ignored = y3 == -100
    assert (grad[ignored] == 0).all() and (grad[~ignored] != 0).any()
    changed = z3.clone()
    changed[ignored] = torch.randn_like(changed[ignored]) * 50
    torch.testing.assert_close(loss_fn(changed, y3), base, rtol=0, atol=0)
    kept = _value_and_grad(loss_fn, z3[~ignored], y3[~ignored])
    torch.testing.assert_close(kept[0], base, rtol=1e-13, atol=0)
    # nothing counts: 0 and a zero gradient, not NaN
    empty, empty_grad = _value_and_grad(loss_fn, z3, torch.full_like(y3, -100))
    assert empty.item() == 0.0 and (empty_grad == 0).all()


def test_bad_inputs_raise() -> None:
    loss_fn = build_loss("HXE", codon_vocab())
    z = torch.randn(4, 70)
    with pytest.raises(ValueError, match="outside"):
        loss_fn(z, torch.tensor([1, 2, 70, 3]))
    with pytest.raises(ValueError, match="do not match"):
        loss_fn(z, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="classes"):
        loss_fn(torch.randn(4, 64), torch.tensor([1, 2, 3, 4]))


def test_tables_are_not_saved_in_checkpoints() -> None:
    for name in list_losses():
        assert build_loss(name, codon_vocab()).state_dict() == {}


def test_codon_tokenizers_are_those_with_a_codon_hierarchy():
    """helm.tokenizers.CODON_TOKENIZERS (checked while parsing flags) is exactly where build_tree has a hierarchy."""
    from helm.codons import build_tree
    from helm.tokenizers import CODON_TOKENIZERS, LEARNED, create_tokenizer, list_tokenizers

    have = set()
    for name in set(list_tokenizers()) - set(LEARNED):
        tok = create_tokenizer(name)
        try:
            build_tree(tok.vocab)
        except ValueError:
            continue
        have.add(tok.name)
    assert have == set(CODON_TOKENIZERS)
