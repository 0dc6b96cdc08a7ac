"""The loss kernels behind `helm.losses.build_loss`: XE, HXE, soft labels, aa_loss_add, aa_loss_only (definitions
below; the registry of names is helm/losses/__init__.py; contracts in docs/ARCHITECTURE.md, "Losses and metrics").

Each is an ``nn.Module`` called as ``loss(logits[..., V], labels[...])``: ``HXELoss(tree, alpha, normalize)``,
``SoftLabelsLoss(tree, beta)``, ``AminoAcidLoss(vocab, add_xe)``, ``CrossEntropyLoss()`` (HXE and soft labels take
any ``codons.Tree``, e.g. ``flat_tree``).

Semantics
---------
HXE(p, c) = -sum_{k<h} lambda(C_k) log(p(C_k) / p(C_k+1)), lambda(n) = exp(-alpha depth(n)) / Z with Z the sum over
all nodes (``normalize=False`` drops Z). It telescopes to -sum_k a_k log p(C_k). alpha = 0 gives XE / Z
(exactly XE when not normalized); on a flat tree HXE = lambda(leaf) * XE.
Soft labels: cross entropy with q_c = softmax(-beta d(., c) / d_max), d = LCA height (0 on the diagonal). It differs
from KL(q_c || p) by the entropy of q_c, a constant of the target, so gradients are identical; beta -> inf gives XE.
aa_loss_only = -log p(aa(c)) with p(aa) the summed probability of the synonymous tokens (specials and stop are
their own classes); aa_loss_add = XE + that.

How HXE is computed
-------------------
All tree losses share one kernel (``_TreeNLL``): per row, L = -sum_k coef[c, k] * log p(C_k) over the target's
ancestors C_k (HXE: the telescoped lambdas; aa losses: a two-level class tree). log p(node) comes from
log-sum-exps taken with a per-group maximum, so very confident logits neither overflow nor underflow: first the
leaves are reduced into their parent nodes on a node-major [V, N] copy (scatter kernels over contiguous rows), then
every inner node gathers the results of the parent nodes below it ([nodes, N], small). The backward is the closed
form dL/dz_v = -(exp(z_v - D_x) R_x + [v = c] coef_0), x the parent of v, D_x the LSE of x's own leaves,
R_x = sum over the ancestors-or-self a of x of b_a exp(D_x - LSE_a) with b the coefficients on the target's path
(-sum coef at the root); every exponent is <= 0. Nothing of shape [N, V, V] or [N, V, depth] is built, nothing
of shape [N, V] is kept from forward to backward, and all reductions run in float32 (float64 for float64 inputs).
Small trees (at most ``DENSE_MAX_NODES`` inner nodes: the codon and amino-acid trees) use a faster equivalent
(``_DenseTreeNLL``): shifted by the row maximum, all node sums are one matmul with the [V, nodes] membership matrix,
and so is the backward (it keeps exp(z - m), [N, V], from the forward: one exp less); each class's coefficients are a
precomputed [V, nodes] table of node weights, and both tables are zero-padded to multiples of 8 (aligned matmuls);
rows whose target lies more than 60 nats (float32) below the row maximum, where that shift could underflow, are
sent to the grouped kernel, so both stay exact for very confident logits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helm.codons import IGNORE_INDEX, Tree, Vocab, aa_classes

DENSE_MAX_NODES = 64  # trees with at most this many inner nodes use the matmul kernel (see _DenseTreeNLL)


# ------------------------------------------------------------------------------------------ input handling


def _select_targets(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten to [N, V] / [N] and keep only the positions that count (label != -100), checking the labels."""
    if logits.shape[-1] != vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} classes but the loss was built for {vocab_size}")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    z = logits.reshape(-1, vocab_size)
    y = labels.reshape(-1).long()
    keep = y != IGNORE_INDEX
    if not keep.all():  # MLM labels few positions: gather them once instead of computing on all
        z, y = z[keep], y[keep]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= vocab_size):
        bad = y[(y < 0) | (y >= vocab_size)][0]
        raise ValueError(f"label {int(bad)} is outside [0, {vocab_size}) and is not the ignore index {IGNORE_INDEX}")
    return z, y


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def _empty_loss(logits: torch.Tensor) -> torch.Tensor:
    # No position counts (e.g. a batch without masked tokens): 0 with a zero gradient, not NaN.
    return logits.sum() * 0.0


class CrossEntropyLoss(nn.Module):
    """Plain token cross entropy, reduced in float32 (also under bf16 autocast)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _select_targets(logits, labels, self.vocab_size)
        if y.numel() == 0:
            return _empty_loss(logits)
        with torch.autocast(z.device.type, enabled=False):
            return F.cross_entropy(z.to(_compute_dtype(z)), y)


# ----------------------------------------------------------------------------------- tree log-sum-exp kernel


class _TreePlan(nn.Module):
    """Index tables of a tree, as (non-persistent) buffers so they follow the loss to its device.

    Inner nodes (nodes with children) are renumbered 0..I-1. ``leaf_parent[v]``: inner index of token v's parent.
    ``anc[v, k]``: inner index of its k-th ancestor (column 0 unused; padded with the root). A *group* is an inner
    node with leaves of its own; an *upper* node one with inner children. An *item* pairs a group x with an upper
    node a above it (or a itself, when a is both): the leaves under a are split among its items' groups, so
    LSE(a) = LSE over its items of D(x), D(x) being the LSE of x's own leaves. A group that is not upper has
    LSE = D.
    """

    def __init__(self, tree: Tree) -> None:
        super().__init__()
        inner_nodes = np.unique(tree.parent[tree.parent >= 0])
        inner_of = np.full(tree.num_nodes, -1, dtype=np.int64)
        inner_of[inner_nodes] = np.arange(len(inner_nodes))
        self.num_inner = len(inner_nodes)
        self.root = int(inner_of[0])
        anc = tree.ancestors
        anc_inner = np.where(anc >= 0, inner_of[np.maximum(anc, 0)], self.root)
        anc_inner[:, 0] = self.root  # column 0 is the leaf itself, handled separately
        groups = np.unique(tree.parent[tree.leaf_of_token])
        upper = np.unique(tree.parent[inner_nodes[inner_nodes > 0]])
        upper_pos = {node: i for i, node in enumerate(upper.tolist())}
        items = []
        for x in groups.tolist():
            a = x if x in upper_pos else tree.parent[x]
            while a >= 0:
                items.append((inner_of[x], inner_of[a], upper_pos[a]))
                a = tree.parent[a]
        item_group, item_upper, item_upper_pos = np.array(items, dtype=np.int64).reshape(-1, 3).T
        pure = np.zeros(self.num_inner, dtype=bool)
        pure[inner_of[np.setdiff1d(groups, upper)]] = True
        tables = {
            "leaf_parent": inner_of[tree.parent[tree.leaf_of_token]],
            "anc": anc_inner,
            "upper": inner_of[upper],
            "item_group": item_group,
            "item_upper": item_upper,
            "item_upper_pos": item_upper_pos,
        }
        for name, array in tables.items():
            self.register_buffer(name, torch.tensor(array, dtype=torch.long), persistent=False)
        self.register_buffer("pure_group", torch.tensor(pure), persistent=False)
        # [V, I] 0/1: token v lies under inner node i (for the matmul kernel of small trees)
        member = tree.membership[inner_nodes].T.astype(np.float64)
        self.register_buffer("member", torch.tensor(member, dtype=torch.float32), persistent=False)


def _transposed_copy(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, V] -> contiguous [V, N] in ``dtype`` (one pass): node reductions then run over contiguous rows."""
    out = torch.empty((z.shape[1], z.shape[0]), dtype=dtype, device=z.device)
    return out.copy_(z.t())


def _group_lse(x: torch.Tensor, index: torch.Tensor, size: int, inplace: bool = False) -> torch.Tensor:
    """Log-sum-exp of the rows of x [K, N] grouped by index [K] -> [size, N], shifted by each group's maximum.

    Empty groups (or groups of -inf) give -inf. With ``inplace`` x is used as scratch space (saves a [K, N] buffer).
    """
    expanded = index[:, None].expand_as(x)  # a view: one scatter kernel instead of a loop over the index
    m = x.new_full((size, x.shape[1]), -torch.inf).scatter_reduce_(0, expanded, x, "amax")
    m.clamp_(min=torch.finfo(x.dtype).min)  # empty groups: a finite shift, so they come out as log(0) = -inf
    sel = m.index_select(0, index)
    shifted = torch.sub(x, sel, out=x if inplace else sel).exp_()
    del sel
    total = x.new_zeros((size, x.shape[1])).scatter_add_(0, expanded, shifted)
    return total.log_().add_(m)


class _TreeNLL(torch.autograd.Function):
    """Per-row L = -sum_k coef[c, k] log p(C_k) over the ancestors C_0 = c, C_1, ... of the target c."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, coef: torch.Tensor, plan: _TreePlan) -> torch.Tensor:
        dtype = _compute_dtype(z)
        # D: LSE of each inner node's own leaves (zT is scratch); then the LSE of all leaves under the upper nodes
        direct = _group_lse(_transposed_copy(z, dtype), plan.leaf_parent, plan.num_inner, inplace=True)
        items = direct.index_select(0, plan.item_group)
        lse = direct.index_copy(0, plan.upper, _group_lse(items, plan.item_upper_pos, len(plan.upper), inplace=True))
        del items
        root = lse[plan.root]
        anc = plan.anc[y].t()  # [D + 1, N]; column 0 and padding point at the root
        log_p = lse.gather(0, anc) - root  # log p(C_k); 0 for the root and padding
        rows = torch.arange(z.shape[0], device=z.device)
        log_p[0] = z[rows, y].to(dtype) - root  # the leaf itself
        c = coef.to(dtype)[y].t()  # [D + 1, N]
        ctx.save_for_backward(z, y, c, direct, lse, anc)
        ctx.plan = plan
        return -(c * log_p).sum(0)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        z, y, c, direct, lse, anc = ctx.saved_tensors
        plan: _TreePlan = ctx.plan
        g = grad_loss.to(lse.dtype)
        # b: the coefficients on the target's inner ancestors, and -sum(coef) at the root (from d LSE_root)
        b = torch.zeros_like(lse).scatter_add_(0, anc[1:], c[1:] * g)
        b[plan.root] -= c.sum(0) * g
        # dL/dz_v = -(exp(z_v - D_x) R_x + [v = c] coef_0), x = parent(v), D_x = LSE of x's own leaves,
        # R_x = sum over the ancestors-or-self a of x of b_a exp(D_x - LSE_a): every exponent is <= 0
        # (a group that is not upper has LSE = D, so its own term is just b_x)
        terms = direct.index_select(0, plan.item_group)
        terms.sub_(lse.index_select(0, plan.item_upper)).exp_().mul_(b.index_select(0, plan.item_upper))
        r = torch.where(plan.pure_group[:, None], b, 0.0).index_add_(0, plan.item_group, terms)
        del terms
        # built row-major so autograd takes it as is (AccumulateGrad would copy a transposed gradient)
        grad = torch.index_select(direct.t().contiguous(), 1, plan.leaf_parent)
        torch.sub(z.to(lse.dtype), grad, out=grad).exp_()
        grad.mul_(torch.index_select(r.neg_().t().contiguous(), 1, plan.leaf_parent))
        rows = torch.arange(z.shape[0], device=z.device)
        grad[rows, y] -= c[0] * g
        return grad.to(z.dtype), None, None, None


# A row whose target logit is this far below the row maximum takes the per-group-maximum kernel: below it,
# exp(z - rowmax) of the target's path could underflow (float32 flushes at about e^-87, float64 at e^-708).
_DENSE_MARGIN = {torch.float32: 60.0, torch.float64: 600.0}


class _DenseTreeNLL(torch.autograd.Function):
    """The same loss for small trees, as two matmuls with the [V, I] leaf-under-node matrix.

    With the per-class node weights ``q[c]`` (`_path_weights`: the telescoped coefficients on the path to the root,
    minus their sum at the root) the loss of a row is -(c_0 (z_c - m) + sum_i q[c, i] log S_i), S = exp(z - m) @
    member (every node's sum, shifted by the row maximum m), and its gradient -c_0 [v = c] - exp(z_v - m)
    sum_i member[v, i] q[c, i] / S_i. Exact when the target is within ``_DENSE_MARGIN`` of the row maximum (so S >=
    e^-margin on the path; off the path q = 0 and S is clamped away from 0); ``_TreeLoss`` sends the other rows to
    ``_TreeNLL``.
    """

    @staticmethod
    def forward(
        ctx,
        z: torch.Tensor,
        y: torch.Tensor,
        c0: torch.Tensor,
        q: torch.Tensor,
        member: torch.Tensor,
        m: torch.Tensor,
        zy: torch.Tensor,
    ) -> torch.Tensor:
        dtype = _compute_dtype(z)
        m = m.to(dtype)
        v = z.shape[1]
        e = torch.sub(z.to(dtype), m[:, None]).exp_()  # [N, V], kept for the backward
        # `member` is zero-padded to multiples of 8 ([V', I']): aligned matmul shapes run up to 1.8x faster here
        s = (e @ member[:v].to(dtype)).clamp_min_(torch.finfo(dtype).tiny)  # [N, I']
        qy, c0y = q.to(dtype)[y], c0.to(dtype)[y]
        ctx.save_for_backward(y, c0y, qy, e, s, member)
        ctx.z_dtype, ctx.v = z.dtype, v
        return -(c0y * (zy.to(dtype) - m) + (qy * s.log()).sum(1))

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        y, c0y, qy, e, s, member = ctx.saved_tensors
        g = grad_loss.to(s.dtype)
        v = ctx.v
        grad = torch.mul((qy.div(s).mul_(g.neg()[:, None]) @ member.to(s.dtype).t())[:, :v], e)
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad[rows, y] -= c0y * g
        return grad.to(ctx.z_dtype), None, None, None, None, None, None


def _path_weights(anc: np.ndarray, coef: np.ndarray, num_inner: int, root: int) -> np.ndarray:
    """[V, I] weights of the inner nodes' log-sums in the loss of each class: sum_k coef[c, k] log p(C_k) =
    c_0 z_c + sum_i q[c, i] LSE_i, with log p(C_k) = LSE(anc_k) - LSE(root) and log p(C_0) = z_c - LSE(root)."""
    q = np.zeros((coef.shape[0], num_inner), dtype=np.float64)
    for c in range(coef.shape[0]):
        np.add.at(q[c], anc[c, 1:], coef[c, 1:])
        q[c, root] -= coef[c].sum()
    return q


class _TreeLoss(nn.Module):
    """Mean over counted positions of -sum_k coef[c, k] log p(C_k) on a tree whose leaves are the tokens."""

    def __init__(self, tree: Tree, coef: np.ndarray, dense: bool | None = None) -> None:
        super().__init__()
        self.vocab_size = tree.vocab_size
        self.plan = _TreePlan(tree)
        # small trees (codon: 30 inner nodes) run as matmuls; large ones (6mer: 470) through the grouped kernel
        self.dense = self.plan.num_inner <= DENSE_MAX_NODES if dense is None else dense
        # float64 tables: the kernels cast them to the compute dtype (float32, or float64 in exact tests)
        self.register_buffer("coef", torch.as_tensor(coef, dtype=torch.float64), persistent=False)
        if self.dense:  # the dense kernel's tables, zero-padded to multiples of 8 rows and columns (aligned matmuls)
            q = _path_weights(self.plan.anc.numpy(), coef, self.plan.num_inner, self.plan.root)
            v, i = (-(-n // 8) * 8 for n in self.plan.member.shape)
            self.register_buffer("dense_member", F.pad(self.plan.member, (0, i - q.shape[1], 0, v - q.shape[0])),
                                 persistent=False)  # fmt: skip
            self.register_buffer("path_weights", F.pad(torch.as_tensor(q), (0, i - q.shape[1])), persistent=False)

    def per_position(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row losses for z [N, V] and targets y [N] (all counted)."""
        with torch.autocast(z.device.type, enabled=False):
            if not self.dense:
                return _TreeNLL.apply(z, y, self.coef, self.plan)
            with torch.no_grad():
                zy = z[torch.arange(z.shape[0], device=z.device), y]
                m = z.amax(1)
                far = (m - zy).to(_compute_dtype(z)) > _DENSE_MARGIN[_compute_dtype(z)]
            dense = (self.coef[:, 0], self.path_weights, self.dense_member)
            if not far.any():
                return _DenseTreeNLL.apply(z, y, *dense, m, zy)
            # rows with a vanishingly unlikely target take the per-group-maximum kernel
            near_idx, far_idx = (~far).nonzero()[:, 0], far.nonzero()[:, 0]
            out = z.new_zeros(z.shape[0], dtype=_compute_dtype(z))
            out = out.index_put((far_idx,), _TreeNLL.apply(z[far_idx], y[far_idx], self.coef, self.plan))
            if len(near_idx):
                near = _DenseTreeNLL.apply(z[near_idx], y[near_idx], *dense, m[near_idx], zy[near_idx])
                out = out.index_put((near_idx,), near)
            return out

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _select_targets(logits, labels, self.vocab_size)
        if y.numel() == 0:
            return _empty_loss(logits)
        return self.per_position(z, y).mean()


def hxe_coefficients(tree: Tree, alpha: float, normalize: bool = True) -> np.ndarray:
    """[V, D + 1] telescoped HXE weights: a_0 = lambda(C_0), a_k = lambda(C_k) - lambda(C_k-1) for 0 < k < h."""
    lam = tree.level_weights(alpha, normalize)
    anc = tree.ancestors
    coef = np.zeros(anc.shape, dtype=np.float64)
    for v in range(tree.vocab_size):
        h = int(tree.depth[tree.leaf_of_token[v]])  # C_h is the root, whose term vanishes
        path = lam[anc[v, :h]]
        coef[v, :h] = np.diff(path, prepend=0.0)
    return coef


class HXELoss(_TreeLoss):
    """Hierarchical cross entropy (Bertinetto et al. 2020) with lambda(n) = exp(-alpha depth(n)) [/ Z]."""

    def __init__(self, tree: Tree, alpha: float = 0.2, normalize: bool = True, dense: bool | None = None) -> None:
        super().__init__(tree, hxe_coefficients(tree, alpha, normalize), dense)
        self.alpha, self.normalize = alpha, normalize

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, normalize={self.normalize}, vocab_size={self.vocab_size}"


def class_tree(classes: np.ndarray) -> Tree:
    """root -> one node per class -> its tokens: the tree behind the amino-acid marginal."""
    num_classes = int(classes.max()) + 1
    v = len(classes)
    parent = np.concatenate([[-1], np.zeros(num_classes, dtype=np.int64), 1 + classes])
    names = ("root",) + tuple(f"class{i}" for i in range(num_classes)) + tuple(f"t{i}" for i in range(v))
    return Tree(names=names, parent=parent, leaf_of_token=np.arange(1 + num_classes, 1 + num_classes + v))


class AminoAcidLoss(_TreeLoss):
    """aa_loss_only: -log p(aa(c)); aa_loss_add: XE - log p(aa(c)). p(aa) sums the synonymous tokens."""

    def __init__(self, vocab: Vocab, add_xe: bool) -> None:
        _, classes = aa_classes(vocab)
        tree = class_tree(classes)
        coef = np.zeros((len(vocab), 3))  # columns: the token, its class, the root (whose log p is 0)
        coef[:, 0] = 1.0 if add_xe else 0.0
        coef[:, 1] = 1.0
        super().__init__(tree, coef)
        self.add_xe = add_xe

    def extra_repr(self) -> str:
        return f"add_xe={self.add_xe}, vocab_size={self.vocab_size}"


# -------------------------------------------------------------------------------------------- soft labels


def soft_label_targets(tree: Tree, beta: float) -> np.ndarray:
    """[V, V] float64: row c is q_c = softmax(-beta * d(., c) / d_max), d = LCA height (0 when equal)."""
    d = tree.lca_height.astype(np.float64)
    logits = -beta * d / d.max()
    logits -= logits.max(axis=1, keepdims=True)
    q = np.exp(logits)
    return q / q.sum(axis=1, keepdims=True)


class _SoftCE(torch.autograd.Function):
    """Per-row -sum_v q[v] log softmax(z)_v with its closed-form gradient softmax(z) - q (q rows sum to 1).

    Fused softmax kernels both ways; nothing of shape [N, V] is kept for the backward.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(z.to(targets.dtype), dim=1)
        loss = torch.linalg.vecdot(log_p, targets.index_select(0, y)).neg_()
        ctx.save_for_backward(z, y)
        ctx.targets = targets
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        z, y = ctx.saved_tensors
        targets = ctx.targets
        grad = torch.softmax(z.to(targets.dtype), dim=1)
        grad.sub_(targets.index_select(0, y)).mul_(grad_loss.to(targets.dtype)[:, None])
        return grad.to(z.dtype), None, None


class SoftLabelsLoss(nn.Module):
    """Cross entropy with the hierarchy's soft targets q_c (rows of ``soft_label_targets``), reduced in float32."""

    def __init__(self, tree: Tree, beta: float = 15.0) -> None:
        super().__init__()
        self.vocab_size = tree.vocab_size
        self.beta = beta
        q = soft_label_targets(tree, beta)
        self.register_buffer("targets", torch.as_tensor(q, dtype=torch.float32), persistent=False)
        self._targets64 = torch.as_tensor(q)  # used only for float64 inputs (exactness tests)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _select_targets(logits, labels, self.vocab_size)
        if y.numel() == 0:
            return _empty_loss(logits)
        targets = self._targets64.to(z.device) if z.dtype == torch.float64 else self.targets
        with torch.autocast(z.device.type, enabled=False):
            return _SoftCE.apply(z, y, targets).mean()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, vocab_size={self.vocab_size}"
