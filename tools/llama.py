"""A small Llama-architecture decoder in plain PyTorch (no transformers dependency).

RMSNorm, rotary position embeddings driven by position_ids, SwiGLU MLP and
grouped-query attention, with the Hugging Face Optimum decoder inputs:
(input_ids, attention_mask, position_ids, past K/V per layer) -> (logits, present K/V),
where present holds only the new tokens' keys and values (the caller keeps the cache), or
with `concat_past` set on every attention, past + new as Optimum's exports do.
The same module is used for training (empty past) and for ONNX export.
"""
from dataclasses import dataclass, asdict
import math
import torch
from torch import nn
import torch.nn.functional as F


@dataclass
class LlamaConfig:
    vocab_size: int = 257
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self):
        return asdict(self)


# Named shapes for exports without training (tools/export.py --shape). smollm2-135m is
# SmolLM2-135M's geometry (30 layers, hidden 576, 9 query / 3 KV heads of 64, MLP 1536, a
# 49,152-token vocabulary) with this module's rope_theta and a 2,048-token context: a model of
# realistic size for benchmarks, whose weights stay at their random initialisation.
SHAPES = {
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                rms_norm_eps=1e-5, rope_theta=10000.0),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def eager_shape(x, shape):
    """ONNX Reshape's reading of `shape`: 0 keeps x's size at that index, -1 is inferred."""
    return [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]


class _ConstantReshape(torch.autograd.Function):
    """Exported as one Reshape by a constant shape. x.view(b, s, ...) with sizes read off a tensor
    whose axes are dynamic traces as Shape -> Gather -> Unsqueeze -> Concat -> Reshape, four
    small operators more per reshape that every step runs (six reshapes per layer)."""

    @staticmethod
    def forward(ctx, x, shape):
        return x.reshape(eager_shape(x, shape))

    @staticmethod
    def symbolic(g, x, shape):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


def reshape(x, *shape):
    """x.reshape with ONNX Reshape's 0 (keep) and -1 (infer); a constant-shape Reshape in exports."""
    if torch.onnx.is_in_onnx_export():
        return _ConstantReshape.apply(x, shape)
    return x.reshape(eager_shape(x, shape))


def rope_eager(x, n_heads, position_ids, cos_cache, sin_cache):
    b, s, _ = x.shape
    x = x.view(b, s, n_heads, -1)
    cos = cos_cache[position_ids][:, :, None]  # [b, s, 1, head_dim / 2]
    sin = sin_cache[position_ids][:, :, None]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).view(b, s, -1)


class _RotaryEmbedding(torch.autograd.Function):
    """Exported as onnxruntime's com.microsoft.RotaryEmbedding (halves form, one operator)
    in place of the Slice, Neg, Concat, Mul and Add nodes the formula traces to."""

    @staticmethod
    def forward(ctx, x, position_ids, cos_cache, sin_cache, n_heads):
        return rope_eager(x, n_heads, position_ids, cos_cache, sin_cache)

    @staticmethod
    def symbolic(g, x, position_ids, cos_cache, sin_cache, n_heads):
        return g.op("com.microsoft::RotaryEmbedding", x, position_ids, cos_cache, sin_cache, interleaved_i=0, num_heads_i=n_heads)


def rope(x, n_heads, position_ids, cos_cache, sin_cache):
    """Rotary position embedding of x [b, s, n_heads * head_dim], halves form (Llama's
    rotate_half): each head's (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) at its token's position.
    cos_cache/sin_cache [max_positions, head_dim / 2] hold cos and sin of position * inv_freq."""
    if torch.onnx.is_in_onnx_export():
        return _RotaryEmbedding.apply(x, position_ids, cos_cache, sin_cache, n_heads)
    return rope_eager(x, n_heads, position_ids, cos_cache, sin_cache)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.hd, cfg.hidden_size, bias=False)
        # Set to torch.float16 for a float16-KV export: new keys/values are rounded to the
        # cache's precision before use, so attention sees the same numbers whether they come
        # from the cache or were just computed (cached decoding == recomputation).
        self.kv_round_dtype = None
        # True: the Hugging Face / Optimum form, whose `present` is past + new concatenated.
        self.concat_past = False

    def forward(self, x, positions, bias, past_k, past_v):
        b, s, _ = x.shape
        q = reshape(rope(self.q_proj(x), self.n_heads, *positions), 0, -1, self.n_heads, self.hd).transpose(1, 2)
        k = reshape(rope(self.k_proj(x), self.n_kv, *positions), 0, -1, self.n_kv, self.hd).transpose(1, 2)
        v = reshape(self.v_proj(x), 0, -1, self.n_kv, self.hd).transpose(1, 2)
        if self.kv_round_dtype is not None:
            k = k.to(self.kv_round_dtype).float()
            v = v.to(self.kv_round_dtype).float()
        rep = self.n_heads // self.n_kv
        scale = 1.0 / math.sqrt(self.hd)
        if past_k is not None and not self.concat_past:
            # Cache-reading form (the export's default): scores against the cached keys and
            # against the new keys are computed apart and the probabilities applied to each
            # value set apart, so the step reads the cache once and never copies it (a Concat
            # of past and new wrote the whole cache again, and returning it as `present` made
            # onnxruntime-node copy it a third time). Returns only the new keys and values.
            # GQA without repeating K/V: the `rep` query heads that share a KV head get their
            # own axis and the cache a broadcast one of size 1, so onnxruntime runs one
            # single-row product per query head and reads each cached vector in place.
            # (Stacking those heads as rows of one [rep*s, head_dim] query, as the branch below
            # does, made a 16-row decode step 10-17% slower over 192-256 slots and a one-row
            # step 7-15% slower over 1024 (~5% faster over 64): with two rows the matrix
            # product first copies the whole cache into a packed layout.)
            c = past_k.shape[2]
            q = reshape(q, 0, self.n_kv, rep, -1, self.hd)
            att = torch.cat([q @ past_k[:, :, None].transpose(-2, -1), q @ k[:, :, None].transpose(-2, -1)], dim=-1)
            att = torch.softmax(att * scale + bias, dim=-1)  # [b, kv, rep, s, c + s]
            y = att[..., :c] @ past_v[:, :, None] + att[..., c:] @ v[:, :, None]
        else:
            if past_k is not None:
                k = torch.cat([past_k, k], dim=2)
                v = torch.cat([past_v, v], dim=2)
            # The rep query heads sharing a KV head are stacked along the query axis: one
            # product per KV head, without materialising rep copies of K/V.
            q = q.reshape(b, self.n_kv, rep * s, self.hd)
            att = (q @ k.transpose(-2, -1)) * scale  # [b, kv, rep*s, t]
            t = att.shape[-1]
            att = att.view(b, self.n_kv, rep, s, t) + bias
            y = torch.softmax(att, dim=-1).view(b, self.n_kv, rep * s, t) @ v
        y = reshape(reshape(y, 0, self.n_heads, -1, self.hd).transpose(1, 2), 0, -1, self.n_heads * self.hd)
        return self.o_proj(y), k, v


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, bias, past_k, past_v):
        h, pk, pv = self.self_attn(self.input_layernorm(x), positions, bias, past_k, past_v)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, pk, pv


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied embeddings
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        freqs = torch.arange(cfg.max_position_embeddings).float()[:, None] * inv_freq[None, :]
        self.register_buffer("cos_cache", freqs.cos(), persistent=False)
        self.register_buffer("sin_cache", freqs.sin(), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.num_hidden_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, input_ids, attention_mask, position_ids, past=None):
        """past: list of (k, v) per layer, each [batch, kv_heads, past_len, head_dim], or None."""
        b, s = input_ids.shape
        x = self.embed_tokens(input_ids)
        positions = (position_ids, self.cos_cache, self.sin_cache)
        p = past[0][0].shape[2] if past is not None else 0
        t = p + s
        # Query i sits at absolute slot p+i and sees slots <= p+i that the mask keeps.
        # A finite large negative, not -inf: a fully masked (padding) row must not NaN.
        q_slot = torch.arange(s)[:, None] + p
        k_slot = torch.arange(t)[None, :]
        allowed = (k_slot <= q_slot)[None, None] & (attention_mask[:, None, None, :] > 0)
        # [b, 1, 1, s, t]: broadcast over KV heads and the query heads sharing each (made once, not per layer).
        bias = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, -1e9)[:, :, None]
        presents = []
        for i, layer in enumerate(self.layers):
            pk, pv = (past[i] if past is not None else (None, None))
            x, nk, nv = layer(x, positions, bias, pk, pv)
            presents.append((nk, nv))
        logits = self.lm_head(self.norm(x))
        return logits, presents
