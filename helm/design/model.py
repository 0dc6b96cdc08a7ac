"""A trained codon run as a design model: constrained decoding (CLM), refinement (MLM), log-likelihoods.

Only codon (``3mer``, no overlap) runs design: one token per codon. At every step only the codons of the position's
residue can be chosen (every other logit is masked), so every design translates exactly to the protein; a codon
that would complete a forbidden pattern (`helm.design.constraints`) is skipped while another is left.

- CLM (`CodonModel.decode`): greedy (beam 1), beam search, or temperature sampling of the synonymous codons, left
  to right. gpt2 runs decode incrementally with a key/value cache (`Gpt2Cache`: one new token per layer and step);
  other backbones recompute the prefix at each step (same result, slower).
- MLM (`CodonModel.refine`): blocked Gibbs sampling. Each sweep visits every position once, in random blocks of
  ``mask_fraction`` of the protein: a block is masked and each of its codons redrawn from the model's conditional
  restricted to synonyms (at temperature T; T = 0 takes the best). ``gibbs`` keeps T fixed, ``anneal`` lowers it
  linearly to ``t_end`` over the sweeps. Codons of one block are drawn given the rest, not given each other.
- scores: the log-probability of every position's codons given the others -- the prefix for a CLM (one teacher-
  forced pass), all other codons for an MLM (pseudo-log-likelihood: each position masked once, batched).

Decoders add a per-codon bias (``cai_weight * ln w``, `helm.design.scores.Objective`) to the model's log-probs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from helm.codons import CLS_ID, CODONS, EOS_ID, MASK_ID
from helm.design.constraints import Constraints, local_hits
from helm.design.protein import ProteinError, codons_of, synonymous_mask
from helm.models.gpt2 import GPT2LM, apply_rotary


@dataclass
class Decoded:
    """One design from a model: codon indices [L] and the per-position preference [L, 64] repair may trade."""

    codons: np.ndarray
    pref: np.ndarray


class Gpt2Cache:
    """Incremental gpt2 decoding: per layer the keys and values of every earlier position, so a step runs one token
    through the blocks (``GPT2Body.forward`` on the whole prefix gives the same logits: tests/design)."""

    def __init__(self, lm: GPT2LM) -> None:
        self.lm, self.body = lm, lm.transformer
        self.keys: list[torch.Tensor | None] = [None] * len(self.body.h)
        self.values: list[torch.Tensor | None] = [None] * len(self.body.h)

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits [B, V] after ``tokens`` [B] at position ``pos`` (0 = the first token)."""
        body = self.body
        ids = tokens[:, None]
        positions = torch.full_like(ids, pos)
        x = body._embed_tokens(ids, positions)
        rotary = body.rotary(positions) if body.rotary is not None else None
        for i, block in enumerate(body.h):
            attn = block.attn
            b, _, h = x.shape
            qkv = attn.c_attn(block.ln_1(x)).split(h, -1)
            q, k, v = (t.view(b, 1, attn.num_heads, -1).transpose(1, 2) for t in qkv)
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if self.keys[i] is not None:
                k, v = torch.cat([self.keys[i], k], dim=2), torch.cat([self.values[i], v], dim=2)
            self.keys[i], self.values[i] = k, v
            y = F.scaled_dot_product_attention(q, k, v)  # the newest query sees every cached position
            x = x + attn.c_proj(y.transpose(1, 2).reshape(b, 1, h))
            x = x + block.mlp(block.ln_2(x))
        logits = self.lm.lm_head(body.ln_f(x))[:, 0]
        return logits[:, : self.lm.config.vocab_size]

    def reorder(self, rows: torch.Tensor) -> None:
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


class Recompute:
    """Decoding for backbones without a cache: the whole prefix through the model at every step."""

    def __init__(self, lm) -> None:
        self.lm, self.ids = lm, None

    def step(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        self.ids = tokens[:, None] if self.ids is None else torch.cat([self.ids, tokens[:, None]], dim=1)
        return self.lm(self.ids)[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        self.ids = self.ids.index_select(0, rows)


class CodonModel:
    """A loaded run (`helm.run.load_run`) seen as a model of codons: ``mode`` is clm or mlm."""

    def __init__(self, run, batch_size: int = 64) -> None:
        from helm.downstream.embed import run_mode

        tok = run.tokenizer
        if getattr(tok, "name", "") != "3mer" or getattr(tok, "overlap", 0) != 0:
            raise ProteinError(f"{run.path}: helm design needs a codon run (3mer tokenizer without overlap), this "
                               f"one uses {getattr(tok, 'name', '?')!r}")  # fmt: skip
        self.run, self.lm, self.mode = run, run.model.eval(), run_mode(run.config)
        self.codon_ids = torch.tensor([tok.vocab.index[c] for c in CODONS])
        self.max_len = int(self.lm.config.max_seq_len)
        self.batch_size = batch_size

    def check_length(self, protein: str, name: str) -> None:
        room = self.max_len - (1 if self.mode == "clm" else 2)
        if len(protein) > room:
            raise ProteinError(f"{name}: {len(protein)} residues, but the run takes at most {room} codons "
                               f"(max_seq_len {self.max_len})")  # fmt: skip

    # ------------------------------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def codon_logprobs(self, codons: np.ndarray) -> np.ndarray:
        """[B, L, 64] log p(codon at l | context) over the whole vocabulary, for designs ``codons`` [B, L] of one
        protein: the prefix (CLM, one pass) or everything else with position l masked (MLM)."""
        codons = torch.as_tensor(np.asarray(codons, dtype=np.int64))
        b, length = codons.shape
        tokens = self.codon_ids[codons]
        if self.mode == "clm":
            ids = torch.cat([torch.full((b, 1), CLS_ID), tokens[:, :-1]], dim=1)
            out = [self._logp(self.lm(ids[i : i + self.batch_size])) for i in range(0, b, self.batch_size)]
            return torch.cat(out).numpy()
        framed = torch.cat([torch.full((b, 1), CLS_ID), tokens, torch.full((b, 1), EOS_ID)], dim=1)
        rows = torch.arange(b).repeat_interleave(length)
        pos = torch.arange(length).repeat(b)
        result = torch.empty(b * length, 64)
        for i in range(0, len(rows), self.batch_size):
            r, p = rows[i : i + self.batch_size], pos[i : i + self.batch_size]
            ids = framed[r].clone()
            ids[torch.arange(len(r)), p + 1] = MASK_ID
            logits = self.lm(ids)[torch.arange(len(r)), p + 1]
            result[i : i + len(r)] = self._logp(logits)
        return result.view(b, length, 64).numpy()

    def _logp(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits.float(), dim=-1)[..., self.codon_ids]

    def log_likelihoods(self, protein: str, designs: list[np.ndarray]) -> list[dict[str, float]]:
        """Per design: ``ll`` (sum of log p of its codons), ``ll_per_codon`` and ``syn_ll_per_codon`` (each codon's
        probability renormalised over its residue's codons: the likelihood of the CDS given the protein)."""
        codons = np.stack(designs)
        logp = self.codon_logprobs(codons)
        return [likelihood_scores(logp[i], codons[i], protein) for i in range(len(designs))]

    # ------------------------------------------------------------------------------------------ CLM decoding
    @torch.inference_mode()
    def decode(self, protein: str, method: str, n: int, bias: np.ndarray, cons: Constraints, beam_size: int = 4,
               temperature: float = 1.0, seed: int = 0) -> list[Decoded]:  # fmt: skip
        """``n`` designs of ``protein`` by greedy / beam / sample decoding (see the module docstring)."""
        if self.mode != "clm":
            raise ProteinError(f"--method {method} decodes left to right and needs a CLM run; this run is an MLM "
                               "(use --method gibbs or anneal)")  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        width = n if method == "sample" else (1 if method == "greedy" else beam_size)
        rows = n if method == "sample" else 1
        stepper = Gpt2Cache(self.lm) if isinstance(self.lm, GPT2LM) else Recompute(self.lm)
        allowed_all = torch.from_numpy(synonymous_mask(protein))
        bias_t = torch.as_tensor(bias, dtype=torch.float32)
        patterns = cons.patterns()
        length = len(protein)
        chosen = torch.zeros(rows, length, dtype=torch.long)
        pref = torch.zeros(rows, length, 64)
        score = torch.zeros(rows)
        tokens = torch.full((rows,), CLS_ID)
        for t in range(length):
            s = self._logp(stepper.step(tokens, t)) + bias_t  # [R, 64]
            allowed = allowed_all[t].expand(len(s), 64).clone()
            if patterns:
                allowed &= self._pattern_free(chosen[:, :t], allowed_all[t], patterns)
            s_masked = s.masked_fill(~allowed, -math.inf)
            pref[:, t] = s
            if method == "sample":
                probs = torch.softmax(s_masked / max(temperature, 1e-6), dim=-1)
                pick = torch.multinomial(probs, 1, generator=gen).squeeze(1)
                parent = torch.arange(len(s))
            else:
                total = (score[:, None] + s_masked).view(-1)
                k = min(width, int(torch.isfinite(total).sum()))
                best = torch.topk(total, k).indices
                parent, pick = best // 64, best % 64
            score = score[parent] + s_masked[parent, pick]
            chosen, pref = chosen[parent], pref[parent]
            chosen[:, t] = pick
            if not torch.equal(parent, torch.arange(len(parent))):
                stepper.reorder(parent)
            tokens = self.codon_ids[pick]
        order = torch.argsort(score, descending=True)[:n] if method != "sample" else torch.arange(rows)
        return [Decoded(chosen[i].numpy(), pref[i].numpy()) for i in order.tolist()]

    @staticmethod
    def _pattern_free(prefixes: torch.Tensor, allowed: torch.Tensor, patterns: tuple[str, ...]) -> torch.Tensor:
        """[R, 64]: which of the allowed codons complete no forbidden pattern after each row's prefix; a row with
        none keeps them all (repair deals with it)."""
        k = max(map(len, patterns)) // 3 + 2
        out = torch.zeros(len(prefixes), 64, dtype=torch.bool)
        candidates = torch.nonzero(allowed).squeeze(1).tolist()
        for r in range(len(prefixes)):
            left = codons_of(prefixes[r, -k:].tolist()) if prefixes.shape[1] else ""
            for c in candidates:
                out[r, c] = not local_hits(left, CODONS[c], "", patterns)
            if not out[r].any():
                out[r] = allowed
        return out

    # ------------------------------------------------------------------------------------------ MLM refinement
    @torch.inference_mode()
    def refine(self, protein: str, init: np.ndarray, bias: np.ndarray, cons: Constraints, sweeps: int = 8,
               t_start: float = 1.0, t_end: float = 0.0, mask_fraction: float = 0.15, seed: int = 0,
               anneal: bool = True) -> list[Decoded]:  # fmt: skip
        """Blocked Gibbs / annealing from ``init`` [n, L] (see the module docstring)."""
        if self.mode != "mlm":
            raise ProteinError("--method gibbs / anneal refine by masked prediction and need an MLM run; this run "
                               "is a CLM (use --method greedy, beam or sample)")  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        cur = torch.as_tensor(np.asarray(init, dtype=np.int64)).clone()
        n, length = cur.shape
        allowed_all = torch.from_numpy(synonymous_mask(protein))
        bias_t = torch.as_tensor(bias, dtype=torch.float32)
        patterns = cons.patterns()
        block = max(1, math.ceil(mask_fraction * length))
        last = torch.zeros(n, length, 64)  # the last sweep's conditionals: the preference repair trades
        for sweep in range(sweeps):
            frac = sweep / (sweeps - 1) if sweeps > 1 else 1.0
            temp = t_start + (t_end - t_start) * frac if anneal else t_start
            order = torch.randperm(length, generator=gen)
            for b0 in range(0, length, block):
                pos = order[b0 : b0 + block]
                ids = torch.cat([torch.full((n, 1), CLS_ID), self.codon_ids[cur], torch.full((n, 1), EOS_ID)], 1)
                ids[:, pos + 1] = MASK_ID
                s = self._logp(self.lm(ids)[:, pos + 1]) + bias_t  # [n, b, 64]
                last[:, pos] = s
                allowed = allowed_all[pos].expand(n, -1, -1).clone()
                if patterns:
                    allowed &= self._pattern_free_at(cur, pos, allowed_all, patterns)
                s = s.masked_fill(~allowed, -math.inf)
                if temp <= 1e-6:
                    pick = s.argmax(-1)
                else:
                    probs = torch.softmax(s / temp, dim=-1).view(-1, 64)
                    pick = torch.multinomial(probs, 1, generator=gen).view(n, len(pos))
                cur[:, pos] = pick
        return [Decoded(cur[i].numpy(), last[i].numpy()) for i in range(n)]

    @staticmethod
    def _pattern_free_at(cur: torch.Tensor, pos: torch.Tensor, allowed_all: torch.Tensor,
                         patterns: tuple[str, ...]) -> torch.Tensor:  # fmt: skip
        """[n, b, 64]: codons at ``pos`` that complete no forbidden pattern with the current neighbours."""
        k = max(map(len, patterns)) // 3 + 2
        n = len(cur)
        out = torch.zeros(n, len(pos), 64, dtype=torch.bool)
        rows = cur.tolist()
        for j, p in enumerate(pos.tolist()):
            candidates = torch.nonzero(allowed_all[p]).squeeze(1).tolist()
            for r in range(n):
                left, right = codons_of(rows[r][max(0, p - k) : p]), codons_of(rows[r][p + 1 : p + 1 + k])
                for c in candidates:
                    out[r, j, c] = not local_hits(left, CODONS[c], right, patterns)
                if not out[r, j].any():
                    out[r, j] = allowed_all[p]
        return out


def likelihood_scores(logp: np.ndarray, codons: np.ndarray, protein: str) -> dict[str, float]:
    """``ll``, ``ll_per_codon``, ``syn_ll_per_codon`` of one design from its [L, 64] codon log-probs."""
    mask = synonymous_mask(protein)
    picked = logp[np.arange(len(codons)), codons]
    norm = np.logaddexp.reduce(np.where(mask, logp, -np.inf), axis=1)
    return {"ll": float(picked.sum()), "ll_per_codon": float(picked.mean()),
            "syn_ll_per_codon": float((picked - norm).mean())}  # fmt: skip
