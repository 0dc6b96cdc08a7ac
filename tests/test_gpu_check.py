"""benchmarks/gpu_check.py --cpu: every check of the GPU acceptance script runs in miniature, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402 - a script, not a package: importable once benchmarks/ is on the path


@pytest.mark.slow  # about 50 s on 2 CPU cores (two `helm train` subprocesses, one of them DDP)
def test_cpu_miniature_reports_every_check(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # --peak-tflops: the CPU has no entry in the peak table, and the MFU arithmetic should run too
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu", "--out", str(out),
           "--data", str(shared_data), "--peak-tflops", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    report = json.loads(out.read_text())
    names = [c["name"] for c in report["checks"]]
    assert names == [c.name for c in gpu_check.checks()]  # every check, once, in order
    for check in report["checks"]:
        assert check["status"] in ("passed", "skipped"), check
        if check["status"] == "skipped":
            assert check["reason"], check
        assert check["name"] in proc.stdout  # a row of the table
    assert report["failed"] == 0 and report["mode"] == "cpu"
    assert "check" in proc.stdout and "passed," in proc.stdout  # header and the counts line

    by_name = {c["name"]: c for c in report["checks"]}
    # the things --cpu can run, it runs: every backbone in bf16, embedding, data, training, DDP
    must_pass = [n for n in names if n.startswith("backbone:")] + [
        "embed:mrfp", "prepare:oas", "pretrain:gpt2-50m-amp", "ddp:2-gpu",
    ]  # fmt: skip
    for name in must_pass:
        assert by_name[name]["status"] == "passed", by_name[name]
    for name in ("mamba_ssm:Mamba", "mamba_ssm:Mamba2"):  # no CUDA here: skipped, but the comparison ran
        dry = by_name[name]["numbers"]["dry_run"]
        # on the CPU the "kernel" side of Mamba-1 is the compiled CPU scan (float32 rounding), of Mamba-2 PyTorch's
        assert dry["out_rel_err"] < 1e-6 and dry["grads_rel_err"] < 1e-5, dry
    train = by_name["pretrain:gpt2-50m-amp"]["numbers"]
    assert train["precision"] == "bf16-mixed" and train["steps"] == train["steps_asked"]
    assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1
    assert by_name["ddp:2-gpu"]["numbers"]["world_size"] == 2
    assert by_name["pretrain:gpt2-50m-amp-compile"]["status"] == "skipped"


def test_peak_table_and_flops() -> None:
    assert gpu_check.peak_for("NVIDIA H100 80GB HBM3") == (989.0, "H100")
    assert gpu_check.peak_for("NVIDIA H100 PCIe")[0] == 756.0
    assert gpu_check.peak_for("NVIDIA H200")[0] == 989.0
    assert gpu_check.peak_for("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert gpu_check.peak_for("NVIDIA A10")[0] == 125.0
    assert gpu_check.peak_for("NVIDIA L40S")[0] == 362.0
    assert gpu_check.peak_for("NVIDIA GeForce RTX 4090")[0] == 165.2
    assert gpu_check.peak_for("Tesla T4") == (None, None)
    from helm.models import create_model

    config = {"num_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "max_seq_len": 64}
    fpt, n = gpu_check.flops_per_token("gpt2", config, 50)
    model = create_model("gpt2", **config)
    tables = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    assert n == model.num_parameters() - tables  # N: every parameter but the token and position tables
    assert fpt == 6 * n + 12 * 2 * 64 * 50
