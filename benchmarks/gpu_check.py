"""GPU acceptance: one command that exercises every CUDA path of helm and says what passed, in about 8 minutes.

    .venv/bin/python benchmarks/gpu_check.py [--out gpu_check.json] [--budget-s 480] [--peak-tflops T]
    .venv/bin/python benchmarks/gpu_check.py --cpu     # the same checks in miniature on the CPU (< ~60 s)
    .venv/bin/python benchmarks/gpu_check.py --only pretrain ddp   # a subset (the others: skipped, not selected)

Without CUDA and without ``--cpu`` it exits 2 at once.

Checks, in this order (each is a function returning a dict: name, status, numbers, tolerance; a failing check
never stops the others; the exit code is 1 when any check failed):

- ``backbone:<model>-<mode>``: gpt2, bert, mamba (Mamba and Mamba2 mixers), hyena, MLM and CLM where both exist, at
  the 50m presets (batch 8 x 444, padded rows; ``--cpu``: the tiny ones, 4 x 64): forward + backward in fp32, then
  under bf16 autocast. Passes when loss, logits and gradients are finite, the logits really are bf16, and bf16
  agrees with fp32 within ``BF16_TOL`` (relative L2 error of the real-token logits and of all gradients).
- ``mamba_ssm:<Mamba|Mamba2>``: the mamba_ssm CUDA / Triton scans against our pure-PyTorch scans on one fp32 model
  (outputs and gradients, relative L2, ``KERNEL_TOL``); skipped with "mamba_ssm not importable" where it is not.
  In ``--cpu`` mode the comparison still runs with PyTorch on both sides (``dry_run``), so the code is exercised.
- ``embed:mrfp``: sequences/s of ``helm.downstream.embed.embed_tokens`` over the mRFP set (1,459 CDS of 226
  codons) with a gpt2-50m model (random weights: speed does not depend on them), fp32 and bf16, and the agreement
  of the two embeddings.
- ``prepare:oas``: ``helm.prepare`` of the real OAS heavy-chain file into the work directory.
- ``pretrain:gpt2-50m-amp``: 300 updates of gpt2-50m (CLM, ``--amp``) through the real ``helm train`` CLI in a
  subprocess. Reports metrics.json's ``tokens_per_s`` (real tokens over the training-step time, warm-up included)
  and a steady-state rate from the TensorBoard step wall times (the last two thirds of the updates), each as model
  FLOPs utilisation (MFU) against the GPU's bf16 dense peak. Goal: MFU >= 40% (printed; not a pass condition).
- ``ddp:2-gpu``: the same run on 2 GPUs (``--num_devices 2``, DDP) when ``torch.cuda.device_count() >= 2``;
  its tokens/s over twice the single-GPU rate is the scaling efficiency. ``--cpu``: 2 gloo processes.
- ``pretrain:gpt2-50m-amp-compile``: the pretrain run again with ``--compile`` (last, so it is the one the time
  budget drops; ``--compile-run on|off|auto``). Its metrics.json rate includes compilation; the steady-state
  rate does not.

MFU = tokens/s x FLOPs per token / (peak bf16 dense TFLOP/s x 1e12), with FLOPs per token (forward + backward,
PaLM appendix B) = 6 x N + 12 x layers x hidden x seq_len, N = parameters outside the token and position embedding
tables (lookups, not matmuls), seq_len = the mean framed training sequence length (real tokens, from the prepared
summary; OAS heavy chains: ~91). Peaks come from ``PEAK_BF16_TFLOPS`` by device name (vendor datasheets, dense,
no sparsity); ``--peak-tflops`` overrides; an unknown card reports no MFU.

Time budget: a check is only started when its estimated time fits in what is left of ``--budget-s``; the rest
are recorded as skipped for time. Subprocesses are killed (as failed) once the budget plus a grace is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    """$HELM_SHARED_DATA, else ../shared/data beside the checkout, else shared/data inside it (a device copy)."""
    if os.environ.get("HELM_SHARED_DATA"):
        return Path(os.environ["HELM_SHARED_DATA"])
    for candidate in (REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "data"


OAS = Path("pretrain") / "oas_parameswaran2013_heavy_100k.csv.gz"
MRFP = Path("downstream") / "mRFP_Expression.csv"

# bf16 autocast vs fp32 (relative L2 error). bf16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 2e-3) and the
# error grows with depth. Measured on the CPU at the 50m presets (batch 2 x 444): logits 4e-3..1.5e-2 (Mamba2 the
# largest), gradients 5e-3..2e-2, loss <= 1e-4; the bounds leave a 3-5x margin for CUDA's different kernels.
BF16_TOL = {"logits": 5e-2, "grads": 1e-1, "loss": 5e-3}
# mamba_ssm vs our scan, both fp32: only summation order differs for the Mamba CUDA scan; the Mamba2 Triton kernel
# may use TF32 in its dot products, hence the wider bound.
KERNEL_TOL = {"Mamba": {"out": 1e-3, "grads": 5e-3}, "Mamba2": {"out": 1e-2, "grads": 3e-2}}
MFU_GOAL = 0.40
# Peak bf16 dense tensor TFLOP/s (no sparsity), matched against torch.cuda.get_device_name in this order.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    (r"H200 NVL", 835.0),
    (r"GH200|H200", 989.0),
    (r"H100 NVL", 835.0),
    (r"H100.*PCIE", 756.0),
    (r"H100", 989.0),  # SXM / HBM3
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
    (r"RTX 4090", 165.2),  # with fp32 accumulation, what torch's bf16 matmuls use
]
STATUSES = ("passed", "failed", "skipped")


# --------------------------------------------------------------------------------------------- plumbing
@dataclass
class Ctx:
    """What every check sees: the device, paths, sizes for this mode and results shared between checks."""

    args: argparse.Namespace
    device: torch.device
    data: Path
    work: Path
    start: float
    peak_tflops: float | None
    shared: dict[str, Any] = field(default_factory=dict)  # prepared dir, single-GPU tokens/s for DDP scaling

    @property
    def cpu(self) -> bool:
        return self.device.type == "cpu"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.args.budget_s - self.elapsed()


@dataclass
class Check:
    name: str
    run: Callable[[Ctx, str], dict[str, Any]]
    estimate_s: tuple[float, float]  # (GPU, --cpu) seconds, for the budget guard


def result(
    name: str,
    status: str,
    summary: str = "",
    numbers: dict[str, Any] | None = None,
    tolerance: dict[str, Any] | str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    assert status in STATUSES, status
    out: dict[str, Any] = {"name": name, "status": status, "summary": summary}
    out["numbers"] = numbers or {}
    out["tolerance"] = tolerance
    if reason:
        out["reason"] = reason
    return out


def skipped(name: str, reason: str, **numbers: Any) -> dict[str, Any]:
    return result(name, "skipped", reason=reason, summary=reason, numbers=numbers)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are zero)."""
    a, b = a.double(), b.double()
    denom = float(b.norm())
    return float((a - b).norm()) / denom if denom > 0 else float((a - b).norm())


def fmt(x: float | None, spec: str = ".2e") -> str:
    return "-" if x is None else format(x, spec)


# ------------------------------------------------------------------------------------- model checks
def synthetic_batch(
    mode: str, batch: int, length: int, vocab: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Framed codon rows of random lengths (one full row fixes the width), right-padded as helm.data pads them:
    MLM ``<cls> t.. <eos>`` with 15% of the sequence tokens masked and labelled, CLM ``<cls> t..`` labelled with
    the next token. Random tokens: agreement and finiteness do not need real sequences."""
    from helm.codons import CLS_ID, EOS_ID, MASK_ID, PAD_ID, SPECIALS

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    lengths[0] = length
    ids = torch.randint(len(SPECIALS), vocab, (batch, length), generator=g)
    pos = torch.arange(length).expand(batch, length)
    mask = pos < lengths[:, None]
    ids[:, 0] = CLS_ID
    if mode == "clm":
        labels = ids.roll(-1, dims=1)
        labels[pos == lengths[:, None] - 1] = EOS_ID
    else:
        ids[pos == lengths[:, None] - 1] = EOS_ID
        inner = (pos > 0) & (pos < lengths[:, None] - 1)
        chosen = inner & (torch.rand(batch, length, generator=g) < 0.15)
        chosen[:, 1] = True  # at least one label per row
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        ids = torch.where(chosen, torch.full_like(ids, MASK_ID), ids)
    labels[~mask] = -100
    ids[~mask] = PAD_ID
    return {k: v.to(device) for k, v in (("input_ids", ids), ("attention_mask", mask), ("labels", labels))}


def forward_backward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], bf16: bool
) -> tuple[float, torch.Tensor, torch.Tensor, torch.dtype]:
    """(loss, real-token logits as float32, all gradients concatenated as float32, the logits' dtype)."""
    model.zero_grad(set_to_none=True)
    device = batch["input_ids"].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    real = logits.detach()[batch["attention_mask"]].float()
    return float(loss.detach()), real, grads, logits.dtype


def backbone_case(preset: str, mode: str, extra: dict[str, Any] | None = None) -> Callable[[Ctx, str], dict[str, Any]]:
    """A check of one backbone in one mode: fp32 and bf16 forward + backward, finite, and in agreement."""
    extra = extra or {}

    def check(ctx: Ctx, name: str) -> dict[str, Any]:
        from helm.models import create_model

        if ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return skipped(name, f"{torch.cuda.get_device_name(ctx.device)} has no bf16")
        size = "tiny" if ctx.cpu else "50m"
        full = preset.replace("{size}", size)
        if ctx.cpu and full.startswith("mamba-tiny"):
            full = "mamba-tiny"
        config = dict(extra)
        if mode == "mlm":
            config.setdefault("bidirectional", True)
        if full == "mamba-tiny" and mode == "mlm":
            config.setdefault("bimamba", "concat")  # the layout of the mamba-<size>-mlm presets
        torch.manual_seed(0)
        model = create_model(full, **config).to(ctx.device).train()
        batch, length = (4, 64) if ctx.cpu else (8, model.config.max_seq_len)
        data = synthetic_batch(mode, batch, length, model.config.vocab_size, ctx.device)
        loss32, logits32, grads32, _ = forward_backward(model, data, bf16=False)
        loss16, logits16, grads16, dtype16 = forward_backward(model, data, bf16=True)
        finite = all(math.isfinite(x) for x in (loss32, loss16)) and all(
            bool(torch.isfinite(t).all()) for t in (logits32, logits16, grads32, grads16)
        )
        numbers = {
            "model": full,
            "config": config,
            "parameters": model.num_parameters(),
            "batch": [batch, length],
            "loss_fp32": loss32,
            "loss_bf16": loss16,
            "loss_rel_err": abs(loss16 - loss32) / abs(loss32),
            "logits_rel_err": rel_l2(logits16, logits32),
            "grads_rel_err": rel_l2(grads16, grads32),
            "bf16_logits_dtype": str(dtype16).replace("torch.", ""),
            "finite": finite,
        }
        del model, grads32, grads16
        problems = []
        if not finite:
            problems.append("non-finite loss, logits or gradients")
        if dtype16 != torch.bfloat16:
            problems.append(f"autocast gave {dtype16} logits, not bf16")
        for key in ("loss", "logits", "grads"):
            if not numbers[f"{key}_rel_err"] <= BF16_TOL[key]:  # NaN fails too
                problems.append(f"{key} rel err {numbers[f'{key}_rel_err']:.2e} > {BF16_TOL[key]:.0e}")
        summary = (
            f"loss {loss16:.4f} (fp32 {loss32:.4f}); rel err logits {numbers['logits_rel_err']:.1e}, "
            f"grads {numbers['grads_rel_err']:.1e}"
        )
        tol = {f"{k}_rel_err": v for k, v in BF16_TOL.items()}
        status = "failed" if problems else "passed"
        return result(name, status, summary, numbers, tol, reason="; ".join(problems) or None)

    return check


def mamba_kernel_case(layer: str) -> Callable[[Ctx, str], dict[str, Any]]:
    """mamba_ssm's kernel for ``layer`` against our PyTorch scan: one fp32 model, both paths, same batch."""

    def compare(ctx: Ctx, device: torch.device) -> dict[str, Any]:
        from helm.models import create_model

        torch.manual_seed(0)
        shape = dict(num_layers=2, hidden_size=64, intermediate_size=128) if ctx.cpu else dict(
            num_layers=4, hidden_size=256, intermediate_size=1024
        )  # fmt: skip
        model = create_model("mamba", ssm_layer=layer, max_seq_len=444, **shape).to(device).train()
        batch, length = (2, 48) if ctx.cpu else (8, 444)
        data = synthetic_batch("clm", batch, length, model.config.vocab_size, device)
        mixers = [m for m in model.modules() if hasattr(m, "use_scan_kernels")]
        runs = {}
        for kernels in (True, False):
            for m in mixers:
                m.use_scan_kernels = kernels
            forward_backward(model, data, bf16=False)  # warm-up: Triton compiles, cuBLAS handles
            sync(device)
            t0 = time.perf_counter()
            loss, logits, grads, _ = forward_backward(model, data, bf16=False)
            sync(device)
            runs[kernels] = (loss, logits, grads, time.perf_counter() - t0)
        for m in mixers:
            m.use_scan_kernels = True
        (_, k_logits, k_grads, k_s), (_, p_logits, p_grads, p_s) = runs[True], runs[False]
        return {
            "layer": layer,
            "batch": [batch, length],
            "out_rel_err": rel_l2(k_logits, p_logits),
            "grads_rel_err": rel_l2(k_grads, p_grads),
            "finite": bool(torch.isfinite(k_logits).all() and torch.isfinite(k_grads).all()),
            "step_s_kernels": k_s,
            "step_s_pytorch": p_s,
            "speedup": p_s / k_s if k_s > 0 else None,
        }

    def check(ctx: Ctx, name: str) -> dict[str, Any]:
        from helm.models.mamba import HAS_MAMBA2_KERNELS, HAS_MAMBA_SSM

        available = HAS_MAMBA_SSM if layer == "Mamba" else HAS_MAMBA2_KERNELS
        reason = None
        if not available:
            what = "" if layer == "Mamba" else " (its Mamba-2 Triton kernel)"
            reason = f"mamba_ssm not importable{what}"
        elif ctx.device.type != "cuda":
            reason = "no CUDA device (--cpu)"
        if reason:
            # --cpu: run the comparison anyway with PyTorch on both sides, so this code cannot rot unnoticed
            if ctx.cpu:
                return skipped(name, reason, dry_run=compare(ctx, torch.device("cpu")))
            return skipped(name, reason)
        numbers = compare(ctx, ctx.device)
        tol = KERNEL_TOL[layer]
        problems = [] if numbers["finite"] else ["non-finite kernel output or gradients"]
        for key in ("out", "grads"):
            if not numbers[f"{key}_rel_err"] <= tol[key]:
                problems.append(f"{key} rel err {numbers[f'{key}_rel_err']:.2e} > {tol[key]:.0e}")
        summary = (
            f"rel err out {numbers['out_rel_err']:.1e}, grads {numbers['grads_rel_err']:.1e}; "
            f"fwd+bwd {numbers['speedup']:.1f}x faster than PyTorch"
        )
        return result(name, "failed" if problems else "passed", summary, numbers,
                      {f"{k}_rel_err": v for k, v in tol.items()}, reason="; ".join(problems) or None)  # fmt: skip

    return check


def embed_check(ctx: Ctx, name: str) -> dict[str, Any]:
    """embed_tokens throughput (sequences/s) on mRFP, fp32 and bf16, and how close the two embeddings are."""
    from helm.downstream.datasets import load_dataset
    from helm.downstream.embed import embed_tokens, encode
    from helm.models import create_model
    from helm.tokenizers import create_tokenizer

    path = ctx.data / MRFP
    if not path.exists():
        return skipped(name, f"{path} not found (--data)")
    if ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return skipped(name, f"{torch.cuda.get_device_name(ctx.device)} has no bf16")
    data = load_dataset("mrfp", path=path, max_rows=200 if ctx.cpu else None)
    tokenizer = create_tokenizer("3mer")
    preset = "gpt2-tiny" if ctx.cpu else "gpt2-50m"
    torch.manual_seed(0)
    model = create_model(preset, vocab_size=len(tokenizer), max_seq_len=444).to(ctx.device).eval()
    enc = encode(tokenizer, data.sequences, model.config.max_seq_len, mode="clm", codon_frame=data.spec.codon_frame)
    batch_size = ctx.args.embed_batch_size
    numbers: dict[str, Any] = {"model": preset, "sequences": len(enc), "tokens": int(enc.mask.sum()),
                               "batch_size": batch_size}  # fmt: skip
    outputs = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        embed_tokens(model, enc.subset(torch.arange(min(len(enc), 2 * batch_size))), batch_size, progress=False,
                     bf16=bf16)  # warm-up: kernels, autocast caches  # fmt: skip
        sync(ctx.device)
        t0 = time.perf_counter()
        outputs[label] = embed_tokens(model, enc, batch_size, progress=False, bf16=bf16)
        sync(ctx.device)
        seconds = time.perf_counter() - t0
        numbers[f"seq_per_s_{label}"] = len(enc) / seconds
        numbers[f"seconds_{label}"] = seconds
    real = enc.mask
    numbers["bf16_rel_err"] = rel_l2(outputs["bf16"][real], outputs["fp32"][real])
    finite = all(bool(torch.isfinite(o).all()) for o in outputs.values())
    numbers["finite"] = finite
    problems = [] if finite else ["non-finite embeddings"]
    if not numbers["bf16_rel_err"] <= BF16_TOL["logits"]:
        problems.append(f"bf16 vs fp32 rel err {numbers['bf16_rel_err']:.2e} > {BF16_TOL['logits']:.0e}")
    summary = (
        f"{numbers['seq_per_s_fp32']:,.0f} seq/s fp32, {numbers['seq_per_s_bf16']:,.0f} seq/s bf16 "
        f"({len(enc)} seqs); bf16 rel err {numbers['bf16_rel_err']:.1e}"
    )
    return result(name, "failed" if problems else "passed", summary, numbers,
                  {"bf16_rel_err": BF16_TOL["logits"]}, reason="; ".join(problems) or None)  # fmt: skip


# ------------------------------------------------------------------------------------ training checks
def prepare_check(ctx: Ctx, name: str) -> dict[str, Any]:
    """The real OAS file (GPU) or its first few hundred in-frame CDS (--cpu) through helm.prepare."""
    from helm.prepare import prepare

    source = ctx.data / OAS
    if not source.exists():
        return skipped(name, f"{source} not found (--data)")
    out = ctx.work / "prepared"
    t0 = time.perf_counter()
    if ctx.cpu:
        from helm.io import oas_cds, read_records

        seqs = []
        for _, row in read_records(source):
            seq, reason, _ = oas_cds(row)
            if reason is None:
                seqs.append(seq)
            if len(seqs) == ctx.args.cpu_sequences:
                break
        raw = ctx.work / "oas_head.txt"
        raw.write_text("\n".join(seqs) + "\n")
        summary = prepare(inputs=[raw], output=out, progress=False, force=True)
    else:
        threads = max(1, min(8, (os.cpu_count() or 2) - 1))
        summary = prepare(inputs=[source], output=out, threads=threads, progress=False, force=True)
    seconds = time.perf_counter() - t0
    kept, tokens = summary["kept"], summary["tokens"]
    mean_len = tokens["train"] / max(1, kept["train"])
    ctx.shared["prepared"] = out
    ctx.shared["mean_tokens"] = mean_len
    numbers = {"source": str(source), "kept": kept, "tokens": tokens, "rejected_total": summary["rejected_total"],
               "mean_train_tokens": mean_len, "seconds": seconds}  # fmt: skip
    line = f"{sum(kept.values()):,} kept ({kept['train']:,} train), mean {mean_len:.1f} codons, {seconds:.1f} s"
    ok = kept["train"] > 0 and kept["val"] > 0
    return result(name, "passed" if ok else "failed", line, numbers, reason=None if ok else "empty train or val split")


def run_helm_train(ctx: Ctx, args: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
    """`helm train ARGS` as a subprocess (the real CLI), output to `log`; (exit code or None on timeout, seconds).
    Its own session, so a timeout also ends the DDP ranks Lightning starts."""
    cmd = [sys.executable, "-m", "helm.cli", "train", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with log.open("w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - t0


def log_tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def steady_tokens_per_s(run_dir: Path, tokens_per_step: float) -> tuple[float | None, list[int] | None]:
    """Tokens/s between the TensorBoard ``train_loss`` points of the last two thirds of the updates (their wall
    times): leaves out start-up, cuDNN/cuBLAS warm-up and torch.compile."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if "train_loss" not in acc.Tags().get("scalars", []):
        return None, None
    events = sorted(acc.Scalars("train_loss"), key=lambda e: e.step)
    last = events[-1].step
    window = [e for e in events if e.step >= last / 3]
    if len(window) < 2 or window[-1].step == window[0].step:
        return None, None
    first, end = window[0], window[-1]
    return tokens_per_step * (end.step - first.step) / (end.wall_time - first.wall_time), [first.step, end.step]


def flops_per_token(arch: str, model_config: dict[str, Any], seq_len: float) -> tuple[float, int]:
    """(6 N + 12 layers hidden seq_len, N): N = parameters outside the embedding tables (built on meta)."""
    from helm.models import create_model

    with torch.device("meta"):
        model = create_model(arch, **model_config)
    embedding = sum(
        p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False)
    )
    n = model.num_parameters() - embedding
    return 6 * n + 12 * model.config.num_layers * model.config.hidden_size * seq_len, n


def pretrain_case(compile: bool = False, devices: int = 1) -> Callable[[Ctx, str], dict[str, Any]]:
    """gpt2-50m (--cpu: gpt2-tiny) CLM with --amp through `helm train`; speed as tokens/s and MFU."""

    def check(ctx: Ctx, name: str) -> dict[str, Any]:
        if devices > 1 and not ctx.cpu and torch.cuda.device_count() < devices:
            return skipped(name, f"{torch.cuda.device_count()} CUDA device(s); DDP needs {devices}")
        if compile and ctx.args.compile_run == "off":
            return skipped(name, "--compile-run off")
        if compile and ctx.cpu and ctx.args.compile_run == "auto":
            return skipped(name, "--cpu: inductor compiles for minutes on a CPU (--compile-run on to force)")
        prepared = ctx.shared.get("prepared")
        if prepared is None:
            return skipped(name, "no prepared data (prepare:oas did not pass)")
        a = ctx.args
        steps = a.cpu_steps if ctx.cpu else (a.ddp_steps if devices > 1 else a.steps)
        batch = 16 if ctx.cpu else a.batch_size
        preset = "gpt2-tiny" if ctx.cpu else "gpt2-50m"
        out = ctx.work / name.replace(":", "_")
        # no validation inside the timed loop (--epoch-repeats: one schedule epoch = several passes); a constant
        # lr without warmup, so 300 updates are legal for the scheduler; few val batches for the final metrics
        args = [
            "--data_dir", str(prepared), "--output", str(out), "--preset", preset, "--mode", "clm",
            "--max_seq_len", "256", "--batch_size", str(batch), "--max-steps", str(steps), "--epoch-repeats", "8",
            "--lr", "6e-4", "--warmup-epochs", "0", "--sched", "none", "--amp", "--seed", "0", "--no-test",
            "--limit-val-batches", "4", "--checkpoint-hist", "1", "--no-progress-bar", "--overwrite",
            "--log-interval", str(1 if ctx.cpu else 10),
        ]  # fmt: skip
        if ctx.cpu:
            args += ["--accelerator", "cpu", "--num_workers", "0"]
        else:
            args += ["--accelerator", "gpu", "--pin-mem"]
        if compile:
            args += ["--compile"]
        if devices > 1:
            args += ["--num_devices", str(devices), "--distributed-backend", "ddp"]
        log = ctx.work / f"{out.name}.log"
        timeout = max(ctx.left(), 30.0) + a.grace_s
        rc, seconds = run_helm_train(ctx, args, log, timeout)
        numbers: dict[str, Any] = {
            "preset": preset, "steps_asked": steps, "batch_per_device": batch, "devices": devices,
            "compile": compile, "wall_s": seconds, "log": str(log),
        }  # fmt: skip
        if rc is None:
            return result(name, "failed", f"timed out after {seconds:.0f} s", numbers,
                          reason=f"killed after {seconds:.0f} s (budget + grace)\n{log_tail(log)}")  # fmt: skip
        if rc != 0 or not (out / "metrics.json").exists():
            return result(name, "failed", f"helm train exit {rc}", numbers,
                          reason=f"helm train exit {rc}\n{log_tail(log)}")  # fmt: skip
        from helm import run

        metrics, config = run.read_metrics(out), run.read_config(out)
        derived = config["derived"]
        seq_len = min(ctx.shared.get("mean_tokens", 0.0) + 1, 256)  # + <cls>: the CLM input framing
        fpt, n_non_embedding = flops_per_token(config["model_name"], derived["model"], seq_len)
        tps = metrics.get("tokens_per_s")
        steady, window = steady_tokens_per_s(out, metrics["train_tokens"] / max(1, metrics["steps"]))
        peak = ctx.peak_tflops
        mfu = tps * fpt / (peak * 1e12) if tps and peak else None
        mfu_steady = steady * fpt / (peak * 1e12) if steady and peak else None
        numbers.update(
            steps=metrics["steps"], world_size=derived["world_size"], precision=derived["precision"],
            global_batch=derived["global_batch"], train_tokens=metrics["train_tokens"],
            train_time_s=metrics["train_time_s"], tokens_per_s=tps, tokens_per_s_steady=steady,
            steady_window_steps=window, val_loss=metrics.get("val_loss"), val_ppl=metrics.get("val_ppl"),
            num_parameters=metrics["num_parameters"], non_embedding_parameters=n_non_embedding,
            seq_len_for_flops=seq_len, flops_per_token=fpt, peak_tflops=peak, mfu=mfu, mfu_steady=mfu_steady,
        )  # fmt: skip
        if devices > 1 and ctx.shared.get("single_tokens_per_s") and tps:
            numbers["scaling_efficiency"] = tps / (devices * ctx.shared["single_tokens_per_s"])
        if devices == 1 and not compile and tps:
            ctx.shared["single_tokens_per_s"] = tps
        problems = []
        if metrics["steps"] != steps:
            problems.append(f"{metrics['steps']} updates, asked {steps}")
        if derived["world_size"] != devices:
            problems.append(f"world size {derived['world_size']}, asked {devices}")
        if not (isinstance(metrics.get("val_loss"), float) and math.isfinite(metrics["val_loss"])):
            problems.append(f"val_loss {metrics.get('val_loss')!r} is not finite")
        if not tps:
            problems.append("no tokens_per_s in metrics.json")
        best = mfu_steady if mfu_steady is not None else mfu
        numbers["mfu_goal"] = MFU_GOAL
        numbers["mfu_goal_met"] = None if best is None else best >= MFU_GOAL
        goal = "" if best is None else f"; goal >= {MFU_GOAL:.0%}: {'met' if best >= MFU_GOAL else 'NOT met'}"
        speed = f"{fmt(tps, ',.0f')} tok/s (steady {fmt(steady, ',.0f')})"
        mfu_text = f"MFU {fmt(mfu, '.1%')} (steady {fmt(mfu_steady, '.1%')})" if peak else "MFU - (no peak TFLOP/s)"
        loss = fmt(metrics.get("val_loss"), ".3f")
        summary = f"{preset}: {metrics['steps']} steps, {speed}, {mfu_text}{goal}; val_loss {loss}"
        if "scaling_efficiency" in numbers:
            summary += f"; scaling {numbers['scaling_efficiency']:.0%}"
        tolerance = {"mfu_goal": MFU_GOAL, "note": "the MFU goal is reported, not a pass condition"}
        return result(name, "failed" if problems else "passed", summary, numbers, tolerance,
                      reason="; ".join(problems) or None)  # fmt: skip

    return check


# ------------------------------------------------------------------------------------------- the run
def checks() -> list[Check]:
    cases = [
        ("backbone:gpt2-clm", backbone_case("gpt2-{size}", "clm")),
        ("backbone:gpt2-mlm", backbone_case("gpt2-{size}", "mlm")),
        ("backbone:bert-mlm", backbone_case("bert-{size}", "mlm")),
        ("backbone:mamba-clm", backbone_case("mamba-{size}-clm", "clm")),
        ("backbone:mamba-mlm", backbone_case("mamba-{size}-mlm", "mlm")),
        ("backbone:mamba2-clm", backbone_case("mamba-{size}-clm", "clm", {"ssm_layer": "Mamba2"})),
        ("backbone:hyena-clm", backbone_case("hyena-{size}", "clm")),
        ("backbone:hyena-mlm", backbone_case("hyena-{size}", "mlm")),
    ]
    # pure-PyTorch mamba on the GPU loops over 444 steps per layer: the slow ones when mamba_ssm is absent
    estimates = {"mamba": (25.0, 3.0), "mamba2": (8.0, 2.0)}
    out = [Check(name, fn, estimates.get(name.split(":")[1].split("-")[0], (6.0, 1.0))) for name, fn in cases]
    out += [
        Check("mamba_ssm:Mamba", mamba_kernel_case("Mamba"), (10.0, 2.0)),
        Check("mamba_ssm:Mamba2", mamba_kernel_case("Mamba2"), (15.0, 2.0)),
        Check("embed:mrfp", embed_check, (20.0, 3.0)),
        Check("prepare:oas", prepare_check, (15.0, 2.0)),
        Check("pretrain:gpt2-50m-amp", pretrain_case(), (90.0, 15.0)),
        Check("ddp:2-gpu", pretrain_case(devices=2), (90.0, 20.0)),
        Check("pretrain:gpt2-50m-amp-compile", pretrain_case(compile=True), (150.0, 120.0)),
    ]
    return out


def environment(ctx: Ctx) -> dict[str, Any]:
    from helm.models.mamba import HAS_MAMBA2_KERNELS, HAS_MAMBA_SSM

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(ctx.device),
        "device_name": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else platform.processor(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mamba_ssm": HAS_MAMBA_SSM,
        "mamba2_kernels": HAS_MAMBA2_KERNELS,
        "peak_tflops": ctx.peak_tflops,
        "peak_source": ctx.shared.get("peak_source"),
        "data": str(ctx.data),
    }
    if HAS_MAMBA_SSM:
        with contextlib.suppress(Exception):
            import mamba_ssm

            env["mamba_ssm_version"] = mamba_ssm.__version__
    if ctx.device.type == "cuda":
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    return env


def peak_for(device_name: str) -> tuple[float | None, str | None]:
    """(bf16 dense peak TFLOP/s, the table pattern that matched) for a CUDA device name; (None, None) if unknown."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops, pattern
    return None, None


def run_checks(ctx: Ctx, selected: list[Check]) -> list[dict[str, Any]]:
    results = []
    for check in selected:
        estimate = check.estimate_s[1 if ctx.cpu else 0]
        if ctx.args.only and not any(pat in check.name for pat in ctx.args.only):
            results.append(skipped(check.name, "not selected (--only)"))
            continue
        if ctx.elapsed() + estimate > ctx.args.budget_s:
            results.append(skipped(check.name, f"time budget: {max(0.0, ctx.left()):.0f} s of --budget-s "
                                               f"{ctx.args.budget_s:.0f} left, needs ~{estimate:.0f} s"))  # fmt: skip
            continue
        t0 = time.perf_counter()
        try:
            out = check.run(ctx, check.name)
        except Exception as err:  # noqa: BLE001 - a broken check is reported, the others still run
            tb = traceback.format_exc(limit=8)
            out = result(check.name, "failed", f"{type(err).__name__}: {err}"[:200], reason=tb)
        out["seconds"] = time.perf_counter() - t0
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        results.append(out)
        print(f"[{ctx.elapsed():6.1f} s] {check.name}: {out['status']}", file=sys.stderr, flush=True)
    return results


def print_table(results: list[dict[str, Any]], env: dict[str, Any], wall_s: float) -> None:
    where = env["device_name"] or env["device"]
    kernels = "yes" if env["mamba_ssm"] else "no"
    print(f"\nhelm GPU acceptance on {where} (torch {env['torch']}, CUDA {env['cuda']}, mamba_ssm {kernels}, "
          f"peak {fmt(env['peak_tflops'], '.0f')} TFLOP/s bf16)")  # fmt: skip
    width = max(len(r["name"]) for r in results)
    print(f"{'check':<{width}}  {'status':<7} {'s':>6}  result")
    print("-" * (width + 80))
    for r in results:
        print(f"{r['name']:<{width}}  {r['status']:<7} {r.get('seconds', 0.0):>6.1f}  {r['summary']}")
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    print("-" * (width + 80))
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped in {wall_s:.0f} s")
    for r in results:
        if r["status"] == "failed":
            print(f"\nFAILED {r['name']}: {r.get('reason', '')}")
    print(f"tolerances: bf16 vs fp32 rel L2 {BF16_TOL}; mamba_ssm vs PyTorch {KERNEL_TOL}; MFU goal {MFU_GOAL:.0%}")


def write_json(path: Path, results: list[dict[str, Any]], env: dict[str, Any], ctx: Ctx, wall_s: float) -> None:
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    payload = {
        "script": "benchmarks/gpu_check.py",
        "mode": "cpu" if ctx.cpu else "gpu",
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "budget_s": ctx.args.budget_s,
        "environment": env,
        "tolerances": {"bf16_vs_fp32": BF16_TOL, "mamba_ssm_vs_pytorch": KERNEL_TOL, "mfu_goal": MFU_GOAL},
        **counts,
        "checks": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON report")
    parser.add_argument("--cpu", action="store_true", help="every check in miniature on the CPU (tiny models)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no check past this many seconds")
    parser.add_argument("--grace-s", type=float, default=60.0, help="a training subprocess may overrun the budget by")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: by device name)")
    parser.add_argument("--data", type=Path, default=default_data(), help="the shared data folder (../shared/data)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep prepared data and runs here")
    parser.add_argument("--steps", type=int, default=300, help="updates of the pretrain runs")
    parser.add_argument("--ddp-steps", type=int, default=100, help="updates of the 2-GPU run")
    parser.add_argument("--batch-size", type=int, default=512, help="per-GPU batch of the pretrain runs")
    parser.add_argument("--embed-batch-size", type=int, default=64, help="embed_tokens batch (helm embed's default)")
    parser.add_argument("--compile-run", choices=("auto", "on", "off"), default="auto",
                        help="the --compile pretrain run: auto = on a GPU when the budget allows")  # fmt: skip
    parser.add_argument("--cpu-steps", type=int, default=5, help="--cpu: updates of the training runs")
    parser.add_argument("--cpu-sequences", type=int, default=400, help="--cpu: OAS sequences to prepare")
    parser.add_argument("--only", nargs="+", default=None, help="run only checks whose name contains one of these")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --cpu for the miniature run", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda:0")
    peak, source = args.peak_tflops, "--peak-tflops" if args.peak_tflops else None
    if peak is None and device.type == "cuda":
        peak, pattern = peak_for(torch.cuda.get_device_name(device))
        source = f"table: {pattern}" if pattern else None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="helm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args=args, device=device, data=args.data, work=work, start=start, peak_tflops=peak)
    ctx.shared["peak_source"] = source
    env = environment(ctx)
    results = run_checks(ctx, checks())
    failed = any(r["status"] == "failed" for r in results)
    wall = time.perf_counter() - start
    print_table(results, env, wall)
    write_json(args.out, results, env, ctx, wall)
    print(f"report: {args.out}")
    if args.work_dir is None and not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:  # the training logs of a failed check are worth reading
        print(f"work directory (prepared data, runs, logs): {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
