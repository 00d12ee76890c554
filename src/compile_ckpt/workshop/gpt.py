"""A small decoder-only transformer for the pretraining benchmark (GPT-2 layout: token and
position embeddings, pre-LayerNorm blocks of causal self-attention and an MLP, a final
LayerNorm, a head tied to the token embedding).

Two variants with the same parameters and state-dict keys: ``attention="sdpa"`` uses
``F.scaled_dot_product_attention``, ``nn.LayerNorm`` and ``F.gelu``; ``attention="manual"``
writes attention (scores, causal mask, softmax), GELU and LayerNorm out in elementwise ops,
which is where a fusing compiler has the most to win.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Sizes of :class:`GPT`."""

    vocab_size: int = 50304
    seq_len: int = 1024
    d_model: int = 768
    n_layer: int = 12
    n_head: int = 12
    attention: str = "sdpa"  # or "manual"

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.attention not in ("sdpa", "manual"):
            raise ValueError(f"attention must be 'sdpa' or 'manual', not {self.attention!r}")


class ManualLayerNorm(nn.Module):
    """LayerNorm in elementwise ops, with ``nn.LayerNorm``'s parameter names."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + 1e-5) * self.weight + self.bias


def manual_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, written out."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        norm = nn.LayerNorm if c.attention == "sdpa" else ManualLayerNorm
        self.manual, self.n_head = c.attention == "manual", c.n_head
        self.ln1, self.ln2 = norm(c.d_model), norm(c.d_model)
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.proj = nn.Linear(c.d_model, c.d_model)
        self.fc = nn.Linear(c.d_model, 4 * c.d_model)
        self.out = nn.Linear(4 * c.d_model, c.d_model)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = (b, t, self.n_head, d // self.n_head)
        q, k, v = (z.view(heads).transpose(1, 2) for z in self.qkv(x).split(d, 2))
        if self.manual:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.n_head)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.ln1(x))
        h = self.fc(self.ln2(x))
        return x + self.out(manual_gelu(h) if self.manual else F.gelu(h, approximate="tanh"))


class GPT(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.seq_len, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln = (nn.LayerNorm if c.attention == "sdpa" else ManualLayerNorm)(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2
        for name, p in self.named_parameters():
            if p.dim() == 2:  # residual projections scaled down, as in GPT-2
                residual = name.endswith(("proj.weight", "out.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layer) if residual else 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def build_gpt(config: GPTConfig, seed: int = 0) -> GPT:
    """A GPT with weights fixed by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(config)


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token: 6 x (parameters but the position embedding) for the matrix
    products of forward and backward, plus 12 x layers x d_model x seq_len for attention
    (the PaLM / nanoGPT estimate)."""
    c = config
    per_layer = 12 * c.d_model**2 + 13 * c.d_model  # qkv, proj, fc, out, their biases, two norms
    params = c.vocab_size * c.d_model + c.n_layer * per_layer + 2 * c.d_model  # tied head: once
    return 6 * params + 12 * c.n_layer * c.d_model * c.seq_len
