"""The LightningModule: parameter groups (weight decay, layer-wise lr decay), gradient clipping modes, EMA
checkpoint state and the optimizer flags. (DDP rescaling and the lr schedule under a
real Trainer are checked end to end in test_train_ddp.py / test_train_e2e.py.)"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from helm.codons import codon_vocab
from helm.module import HelmModule, param_groups
from helm.train import parse_args

TINY = ["--num_layers", "2", "--hidden_size", "32", "--num_heads", "2", "--intermediate_size", "64",
        "--max_seq_len", "32", "--lr", "1e-3"]  # fmt: skip


def make_module(*argv: str) -> HelmModule:
    cfg = parse_args([*TINY, *argv])
    return HelmModule(cfg, codon_vocab(), updates_per_epoch=10)


def test_param_groups_cover_every_parameter_once_with_the_right_decay():
    module = make_module()
    groups = param_groups(module.model, weight_decay=0.1, layer_decay=None, num_layers=2)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in module.model.parameters())
    for g in groups:
        for p in g["params"]:
            assert g["weight_decay"] == (0.1 if p.ndim > 1 else 0.0)
        assert "lr_scale" not in g


def test_layer_decay_scales_by_depth():
    module = make_module()
    names = {id(p): n for n, p in module.model.named_parameters()}
    groups = param_groups(module.model, weight_decay=0.0, layer_decay=0.5, num_layers=2)
    scale = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    # 2 blocks: embeddings 0.5^3, block 0 0.5^2, block 1 0.5^1, head / final norm 1
    assert scale["transformer.wte.weight"] == 0.125
    assert all(v == 0.25 for k, v in scale.items() if ".h.0." in k)
    assert all(v == 0.5 for k, v in scale.items() if ".h.1." in k)
    assert scale["transformer.ln_f.weight"] == 1.0


def test_optimizer_gets_the_flags():
    module = make_module("--opt", "adamw", "--opt-betas", "0.8", "0.9", "--opt-eps", "1e-6", "--weight-decay",
                         "0.05", "--sched", "none")  # fmt: skip
    opt = module.configure_optimizers()
    assert type(opt).__name__ == "AdamW"
    assert opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["eps"] == 1e-6 and opt.defaults["lr"] == 1e-3
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}


def _fill_grads(module: HelmModule, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for p in module.model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
        grads.append(p.grad.clone())
    return grads


def test_clip_norm_and_value_match_their_definitions():
    module = make_module("--clip-grad", "0.5", "--clip-mode", "norm")
    grads = _fill_grads(module)
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    module.configure_gradient_clipping(None)
    for g, p in zip(grads, module.model.parameters()):
        torch.testing.assert_close(p.grad, g * (0.5 / total), rtol=1e-4, atol=1e-7)

    module = make_module("--clip-grad", "0.5", "--clip-mode", "value")
    grads = _fill_grads(module)
    module.configure_gradient_clipping(None)
    for g, p in zip(grads, module.model.parameters()):
        torch.testing.assert_close(p.grad, g.clamp(-0.5, 0.5))


def test_clip_agc_limits_the_unitwise_ratio():
    """Adaptive clipping: per output unit, |grad| <= clip x max(|weight|, eps), other units untouched."""
    module = make_module("--clip-grad", "0.01", "--clip-mode", "agc")
    grads = _fill_grads(module)
    module.configure_gradient_clipping(None)
    for g, p in zip(grads, module.model.parameters()):
        dims = tuple(range(1, p.ndim)) if p.ndim > 1 else None
        wn = p.detach().norm(dim=dims, keepdim=True) if dims else p.detach().norm()
        gn = g.norm(dim=dims, keepdim=True) if dims else g.norm()
        limit = 0.01 * wn.clamp(min=1e-3)
        expected = torch.where(gn > limit, g * (limit / gn.clamp(min=1e-6)), g)
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-7)


def test_no_clipping_without_the_flag():
    module = make_module()
    grads = _fill_grads(module)
    module.configure_gradient_clipping(None)
    for g, p in zip(grads, module.model.parameters()):
        assert torch.equal(p.grad, g)


def test_ema_travels_in_the_checkpoint():
    module = make_module("--model-ema", "--model-ema-decay", "0.5")
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module.ema.update(module.model, step=1)
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    fresh = make_module("--model-ema", "--model-ema-decay", "0.5")
    fresh.on_load_checkpoint(ckpt)
    for (name, a), b in zip(module.ema.module.state_dict().items(), fresh.ema.module.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert fresh.eval_model() is fresh.ema.module
    with pytest.raises(ValueError, match="no EMA weights"):
        fresh.on_load_checkpoint({})


def _plateau(*argv: str):
    module = make_module("--sched", "plateau", "--patience-epochs", "2", "--decay-rate", "0.5", "--warmup-epochs",
                         "0", "--lr-noise", "0.0", "1.0", "--lr-noise-pct", "0.2", *argv)  # fmt: skip
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    return sched, sched.optimizer


def _lrs(sched, optimizer, start: int, metrics: list[float]) -> list[list[float]]:
    lrs = []
    for epoch, metric in enumerate(metrics, start):
        sched.step(epoch, metric)
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return lrs


def test_plateau_state_survives_a_checkpoint():
    """timm's PlateauLRScheduler saves only best / last_epoch: the patience counter and the noise-free lr are lost,
    so a resumed run decays later (and from a noisy lr) than an uninterrupted one. Ours saves them."""
    from timm.scheduler import PlateauLRScheduler

    sched, opt = _plateau()
    _lrs(sched, opt, 1, [1.0, 2.0, 2.0])  # best 1.0, then 2 bad epochs: waiting, no decay yet (patience 2)
    assert sched.lr_scheduler.num_bad_epochs == 2 and sched.restore_lr is not None
    assert max(g["lr"] for g in opt.param_groups) != 1e-3  # noise applied: restore_lr holds the clean lr
    full, plain, opt_state = sched.state_dict(), PlateauLRScheduler.state_dict(sched), copy.deepcopy(opt.state_dict())
    assert set(plain) == {"best", "last_epoch"}

    later = [2.0, 0.5, 2.0, 2.0, 2.0, 2.0]  # decays on the next epoch, improves, then waits and decays again
    expected = _lrs(sched, opt, 4, later)
    resumed = []
    for state in (full, plain):  # plain: a checkpoint written before the fix still loads
        fresh, fresh_opt = _plateau()
        fresh_opt.load_state_dict(opt_state)  # as Lightning restores the optimizer before the scheduler
        fresh.load_state_dict(copy.deepcopy(state))
        resumed.append(_lrs(fresh, fresh_opt, 4, later))
    assert resumed[0] == expected
    assert resumed[1] != expected  # timm's own state_dict would restart the plateau logic


def test_plateau_deprecation_warning_is_filtered(recwarn):
    """timm's FutureWarning says the plateau state is not checkpointed, which is no longer true here."""
    _plateau()
    assert not [w for w in recwarn if "PlateauLRScheduler is deprecated" in str(w.message)]
