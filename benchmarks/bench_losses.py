"""Time and peak extra memory of the training losses, forward + backward, relative to plain cross entropy.

    .venv/bin/python benchmarks/bench_losses.py [--repeats 7] [--only codon|6mer] [--threads 2]

Every measurement uses torch.set_num_threads(2) (``--threads``). On a shared, oversubscribed machine every
multi-threaded op also waits for its descheduled worker thread, which penalizes many small ops (HXE) against
a few fused ones (XE); ``--threads 1`` shows the work ratio without that effect.
- memory: a fresh subprocess per (vocabulary, loss) builds the logits [N, V] (float32, requires_grad), the labels
  and the loss module, then runs one forward + backward. Peak extra memory = the kernel's peak-RSS mark (VmHWM in
  /proc/self/status, which sees torch's allocations, unlike tracemalloc; reset just before the step by writing 5
  to /proc/self/clear_refs) minus the RSS just before the step. It includes the gradient of the logits, which
  every variant produces. The memory subprocess runs with MALLOC_MMAP_THRESHOLD_=65536 (a fixed glibc threshold):
  every tensor above 64 KiB is then its own mmap, returned to the system when freed, so the RSS follows the live
  tensors and the peak is their high-water mark during the step (with glibc's default dynamic threshold, freed
  mid-size tensors stay in the heap and blur the measure).
- time: one subprocess per vocabulary runs the variants round-robin (so a busy shared machine slows them alike)
  and reports the minimum and the median over ``--repeats`` rounds; ratios use the minimum.
The naive reference HXE materializes [N, depth + 1, V] one-hot membership tensors (the textbook form); on the
6mer vocabulary it is skipped when that tensor alone would exceed --naive-limit-gb.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("XE", "HXE", "soft_labels", "aa_loss_add", "naive_HXE")
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
SETTINGS = {"codon": (128 * 444, 3), "6mer": (128 * 222, 6)}  # rows N and k of the k-mer vocabulary


class NaiveHXE(torch.nn.Module):
    """Reference point: p(C_k) by multiplying the softmax with a [N, depth + 1, V] one-hot membership tensor."""

    def __init__(self, tree, alpha: float = 0.2) -> None:
        super().__init__()
        anc = torch.as_tensor(tree.ancestors)
        member = torch.as_tensor(tree.membership)
        # [V, D + 1, V]: leaves under each ancestor of each token (the root repeated past the top)
        filled = torch.where(anc >= 0, anc, 0)
        self.register_buffer("member", member[filled].float())
        lam = torch.as_tensor(tree.level_weights(alpha), dtype=torch.float32)[filled]
        valid = (anc[:, 1:] >= 0).float()  # a term exists while C_k+1 exists
        self.register_buffer("lam", lam[:, :-1] * valid)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float(), dim=-1)
        onehot = self.member[labels]  # [N, D + 1, V]
        p_node = torch.einsum("nv,nkv->nk", probs, onehot).clamp_min(1e-30)
        ratios = torch.log(p_node[:, :-1] / p_node[:, 1:])
        return -(self.lam[labels] * ratios).sum(1).mean()


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status (Linux only)")


def _setup(setting: str, variant: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from helm.codons import build_tree, kmer_vocab
    from helm.losses import build_loss

    n, k = SETTINGS[setting]
    vocab = kmer_vocab(k)
    loss_fn = NaiveHXE(build_tree(vocab)) if variant == "naive_HXE" else build_loss(variant, vocab)
    gen = torch.Generator().manual_seed(0)
    logits = torch.empty(n, len(vocab)).normal_(0.0, 2.0, generator=gen).requires_grad_(True)
    labels = torch.randint(6, len(vocab), (n,), generator=gen)  # sequence tokens, as in training
    loss_fn(logits[:8], labels[:8]).backward()  # build lazily created state on a tiny slice
    logits.grad = None
    return loss_fn, logits, labels


def measure_memory(setting: str, variant: str) -> float:
    """In a fresh subprocess: peak extra MiB of one forward + backward."""
    loss_fn, logits, labels = _setup(setting, variant)
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak-RSS mark to the current RSS
        f.write("5")
    loss_fn(logits, labels).backward()
    return (_status_bytes("VmHWM") - before) / 2**20


def measure_time(setting: str, variants: list[str], repeats: int) -> dict[str, list[float]]:
    """Round-robin forward + backward timings (seconds) of every variant."""
    setups = {v: _setup(setting, v) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v, (loss_fn, logits, labels) in setups.items():
            logits.grad = None
            start = time.perf_counter()
            loss_fn(logits, labels).backward()
            times[v].append(time.perf_counter() - start)
    return times


def _child(args: list[str], env: dict[str, str] | None = None) -> str:
    env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"benchmark subprocess {args} failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(SETTINGS))
    parser.add_argument("--naive-limit-gb", type=float, default=2.0)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--time-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(measure_memory(*args.memory_child)))
        return
    if args.time_child:
        print(json.dumps(measure_time(args.time_child[0], args.time_child[1:], args.repeats)))
        return

    for setting in [args.only] if args.only else list(SETTINGS):
        n, k = SETTINGS[setting]
        v = 4**k + 6
        variants = list(VARIANTS)
        naive_gb = n * v * (k // 3 + 4) * 4 / 2**30  # depth + 1 columns: 5 (codon), 6 (6mer)
        if naive_gb > args.naive_limit_gb:
            variants.remove("naive_HXE")
        print(
            f"\n== {setting}: logits [{n}, {v}] float32 (N = {n}), forward + backward, {args.threads} threads, "
            f"{args.repeats} rounds (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )
        memory = {
            var: json.loads(_child(["--threads", str(args.threads), "--memory-child", setting, var], MMAP_ENV))
            for var in variants
        }
        times = json.loads(
            _child(["--threads", str(args.threads), "--repeats", str(args.repeats), "--time-child", setting, *variants])
        )
        base_t, base_m = min(times["XE"]), memory["XE"]
        for var in variants:
            t_min, t_med = min(times[var]), statistics.median(times[var])
            print(
                f"{var:>12}: time min {t_min * 1e3:8.1f} ms (median {t_med * 1e3:8.1f})  {t_min / base_t:5.2f}x XE   "
                f"peak extra {memory[var]:7.1f} MiB  {memory[var] / base_m:5.2f}x XE"
            )
        if "naive_HXE" not in variants:
            print(f"{'naive_HXE':>12}: skipped, its [N, depth+1, V] one-hot tensor alone is {naive_gb:.1f} GiB")


if __name__ == "__main__":
    main()
