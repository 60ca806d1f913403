"""MiniCPM-SALA forward pass in plain PyTorch (training and reference).

Follows docs/spec/minicpm-sala.md and test/fixtures/sala-tiny-a/README.md ("Semantics an
engine must match"). Weight names are the Hugging Face ones (model.embed_tokens.weight, model.layers.i...).

Two sparse-attention implementations compute the same function:
  * `impl="ref"`  : gather of the selected 64-token blocks per query (float32, chunked over
                    queries, works on any PyTorch >= 1.13 and at 1M tokens). Used for fixtures,
                    metrics and parity.
  * `impl="flex"` : torch.nn.attention.flex_attention with a block mask built from the same
                    top-k block ids (training; needs PyTorch >= 2.5 on a GPU).
Block selection (stage 1, pooling, top-k) is shared and runs without gradients.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LIGHTNING = ("lightning-attn", "lightning", "lightning_attn")


# --------------------------------------------------------------------------- config
class SalaConfig:
    def __init__(self, d):
        self.d = dict(d)
        for k, v in d.items():
            setattr(self, k, v)
        sc = d["sparse_config"]
        self.kernel_size = sc["kernel_size"]
        self.kernel_stride = sc["kernel_stride"]
        self.block_size = sc["block_size"]
        self.init_blocks = sc["init_blocks"]
        self.window_size = sc["window_size"]
        self.topk = sc["topk"]
        self.dense_len = sc["dense_len"]
        self.local_blocks = self.window_size // self.block_size
        self.n_select = self.topk + self.local_blocks
        self.sparse_head_dim = self.hidden_size // self.num_attention_heads
        self.residual_scale = self.scale_depth / math.sqrt(self.num_hidden_layers)
        self.logit_div = self.hidden_size / self.dim_model_base
        if self.lightning_scale == "1/sqrt(d)":
            self.lscale = 1.0 / math.sqrt(self.head_dim)
        elif self.lightning_scale == "1/d":
            self.lscale = 1.0 / self.head_dim
        else:
            self.lscale = 1.0

    def is_sparse(self, i):
        return self.mixer_types[i] == "minicpm4"


def validate_config(c):
    """The checks the engine's validator makes (engine/model/config.ts)."""
    assert c.mixer_types[0] == "minicpm4"
    assert c.attn_use_rope is False
    assert c.kernel_size == 2 * c.kernel_stride
    assert c.block_size % c.kernel_stride == 0
    assert c.window_size % c.block_size == 0
    assert 16 % (c.num_attention_heads // c.num_key_value_heads) == 0
    assert c.num_attention_heads % c.num_key_value_heads == 0
    assert c.hidden_act == "silu" and c.attention_bias is False and c.rope_scaling is None
    assert all(m == "minicpm4" or m in LIGHTNING for m in c.mixer_types)
    assert len(c.mixer_types) == c.num_hidden_layers
    assert sum(m == "minicpm4" for m in c.mixer_types) * 4 >= c.num_hidden_layers


def alibi_slopes(n):
    def pow2(m):
        start = 2.0 ** (-(2.0 ** -(math.log2(m) - 3)))
        return [start * start ** i for i in range(m)]
    if math.log2(n).is_integer():
        return pow2(n)
    c = 2 ** math.floor(math.log2(n))
    return pow2(c) + alibi_slopes(2 * c)[0::2][: n - c]


# --------------------------------------------------------------------------- basic modules
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        h = x.float()
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.eps)
        return self.weight * h.to(dt)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_cos_sin(positions, dim, theta, device):
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device).float() / dim))
    freqs = positions.to(device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    """x [B, T, H, D]; cos/sin [T, D]; rotate-half layout, computed in fp32."""
    dt = x.dtype
    xf = x.float()
    half = xf.shape[-1] // 2
    rot = torch.cat((-xf[..., half:], xf[..., :half]), dim=-1)
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return (xf * c + rot * s).to(dt)


# --------------------------------------------------------------------------- lightning core
def lightning_chunk(q, k, v, slopes, chunk=64, state=None):
    """Decayed linear attention, fp32, chunked form (all chunks in parallel).

    q, k, v: [B, H, T, D] float32 (q already scaled). slopes: [H] float32 (decay exp(-s)).
    state: optional [B, H, D, D] carried in. Returns (o [B, H, T, D], final_state or None).
    final_state is only returned when T is a multiple of `chunk`.
    """
    B, H, T, D = q.shape
    C = chunk
    pad = (-T) % C
    if pad:
        q = F.pad(q, (0, 0, 0, pad))
        k = F.pad(k, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    n = (T + pad) // C
    q = q.view(B, H, n, C, D)
    k = k.view(B, H, n, C, D)
    v = v.view(B, H, n, C, D)
    dev = q.device
    s = slopes.to(dev).float().view(H, 1, 1)
    idx = torch.arange(C, device=dev, dtype=torch.float32)
    diff = idx[:, None] - idx[None, :]
    M = torch.where(diff >= 0, torch.exp(-s * diff.clamp(min=0)), torch.zeros((), device=dev))  # [H,C,C]
    att = torch.matmul(q, k.transpose(-1, -2)) * M[None, :, None]
    o = torch.matmul(att, v)
    kdec = torch.exp(-s.view(H, 1) * (C - 1 - idx)[None, :])  # [H, C]
    dS = torch.matmul((k * kdec[None, :, None, :, None]).transpose(-1, -2), v)  # [B,H,n,D,D]
    ci = torch.arange(n, device=dev, dtype=torch.float32)
    e = ci[:, None] - 1 - ci[None, :]
    W = torch.where(e >= 0, torch.exp(-s * C * e.clamp(min=0)), torch.zeros((), device=dev))  # [H,n,n]
    Sprev = torch.einsum("hcd,bhdxy->bhcxy", W, dS)
    if state is not None:
        Sprev = Sprev + torch.exp(-s.view(H, 1) * C * ci[None, :])[None, :, :, None, None] * state[:, :, None]
    qdec = torch.exp(-s.view(H, 1) * (idx + 1)[None, :])  # [H, C]
    o = o + torch.matmul(q * qdec[None, :, None, :, None], Sprev)
    o = o.reshape(B, H, n * C, D)[:, :, :T]
    final = None
    if pad == 0:
        wl = torch.exp(-s.view(H, 1) * C * (n - 1 - ci)[None, :])  # [H, n]
        final = torch.einsum("hc,bhcxy->bhxy", wl, dS)
        if state is not None:
            final = final + torch.exp(-s.view(H, 1, 1) * C * n)[None] * state
    return o, final


def lightning_attention(q, k, v, slopes, segment=16384, chunk=64):
    """Long sequences: segments of `segment` tokens carrying the state."""
    T = q.shape[2]
    if T <= segment:
        return lightning_chunk(q, k, v, slopes, chunk)[0]
    outs = []
    state = None
    for a in range(0, T, segment):
        b = min(T, a + segment)
        o, state = lightning_chunk(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], slopes, chunk, state)
        outs.append(o)
    return torch.cat(outs, dim=2)


class LightningAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, D = c.num_attention_heads, c.head_dim
        self.H, self.D, self.Hkv = H, D, c.lightning_nkv
        self.q_proj = nn.Linear(c.hidden_size, H * D, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.Hkv * D, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.Hkv * D, bias=False)
        self.o_proj = nn.Linear(H * D, c.hidden_size, bias=False)
        self.z_proj = nn.Linear(c.hidden_size, H * D, bias=False)
        self.q_norm = RMSNorm(D, c.rms_norm_eps)
        self.k_norm = RMSNorm(D, c.rms_norm_eps)
        self.o_norm = RMSNorm(H * D, c.rms_norm_eps)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(H), dtype=torch.float32), persistent=False)

    def forward(self, x, cos, sin, opts):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D)
        k = self.k_proj(x).view(B, T, self.Hkv, self.D)
        v = self.v_proj(x).view(B, T, self.Hkv, self.D)
        q = self.q_norm(q)
        k = self.k_norm(k)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if self.Hkv != self.H:
            k = k.repeat_interleave(self.H // self.Hkv, dim=2)
            v = v.repeat_interleave(self.H // self.Hkv, dim=2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            qf = q.float().transpose(1, 2) * self.c.lscale
            o = lightning_attention(qf, k.float().transpose(1, 2), v.float().transpose(1, 2), self.slopes,
                                    segment=opts.get("lightning_segment", 16384))
        o = o.transpose(1, 2).reshape(B, T, self.H * self.D).to(x.dtype)
        o = self.o_norm(o)
        o = o * torch.sigmoid(self.z_proj(x))
        return self.o_proj(o)


# --------------------------------------------------------------------------- InfLLM-V2 selection
def compress_keys(k, ksize, stride):
    """k [B, Hk, T, D] -> mean over windows [B, Hk, n, D], n = (T-ksize)//stride + 1."""
    T = k.shape[2]
    if T < ksize:
        return k.new_zeros(k.shape[0], k.shape[1], 0, k.shape[3])
    return k.unfold(2, ksize, stride).mean(-1)


def _visible(tpos, n, L, s):
    """Prefill stage-1 visibility count per query (kernel's bottom-right formula)."""
    return (tpos + 1) // s - 1 + n - int(math.trunc((L - s + 1) / s))


@torch.no_grad()
def select_blocks(q, k, c, q_chunk=1024, decode=False):
    """InfLLM-V2 top-k block ids for every query position.

    q [B, H, T, D], k [B, Hk, L, D] (float32 preferred). Query t sits at absolute position
    L - T + t. Returns int64 [B, Hk, T, n_sel] ascending, -1 for unused slots.
    """
    B, H, T, D = q.shape
    Hk, L = k.shape[1], k.shape[2]
    k = k.float()
    G = H // Hk
    rep = 16 // G
    s1, ks1 = c.kernel_stride, c.kernel_size
    s2, ks2 = 4 * s1, 4 * ks1
    bs = c.block_size
    C1 = compress_keys(k, ks1, s1)
    C2 = compress_keys(k, ks2, s2)
    n1, n2 = C1.shape[2], C2.shape[2]
    nb = (L + bs - 1) // bs
    n_sel = min(c.n_select, nb)
    ps = bs // s1
    pk = ps + 1
    scale = 1.0 / math.sqrt(D)
    dev = q.device
    out = torch.empty(B, Hk, T, n_sel, dtype=torch.long, device=dev)
    j1 = torch.arange(n1, device=dev)
    j2 = torch.arange(n2, device=dev)
    bidx = torch.arange(nb, device=dev)
    C1t = C1.transpose(-1, -2)
    C2t = C2.transpose(-1, -2)
    padlen = max(n1 + 1, ps * nb + 1)
    for a in range(0, T, q_chunk):
        b = min(T, a + q_chunk)
        qc = q[:, :, a:b].float()
        tpos = torch.arange(L - T + a, L - T + b, device=dev)
        sc2 = torch.matmul(qc, C2t.repeat_interleave(G, dim=1)) * scale  # [B,H,tq,n2]
        sc1 = torch.matmul(qc, C1t.repeat_interleave(G, dim=1)) * scale  # [B,H,tq,n1]
        if not decode:
            v2 = _visible(tpos, n2, L, s2)
            v1 = _visible(tpos, n1, L, s1)
            sc2 = sc2.masked_fill(j2[None, :] >= v2[:, None], float("-inf"))
            m1 = j1[None, :] >= v1[:, None]
        else:
            m1 = None
        lse = torch.logsumexp(sc2, dim=-1, keepdim=True) if n2 > 0 else torch.full_like(sc1[..., :1], float("-inf"))
        p = torch.exp(sc1 - lse)
        if m1 is not None:
            p = p.masked_fill(m1, 0.0)
        p = torch.where(torch.isnan(p), torch.zeros((), device=dev), p)
        S = p.view(B, Hk, G, b - a, n1).sum(2) * float(rep)  # [B,Hk,tq,n1]
        Sp = torch.full((B, Hk, b - a, padlen), float("-inf"), device=dev)
        Sp[..., 1:n1 + 1] = S
        pooled = Sp.unfold(-1, pk, ps)[..., :nb, :].amax(-1)  # [B,Hk,tq,nb]
        qb = tpos // bs
        forced = (bidx[None, :] < c.init_blocks) | (
            (bidx[None, :] >= (qb - c.local_blocks)[:, None]) & (bidx[None, :] <= qb[:, None]))
        pooled = pooled.masked_fill(forced[None, None], float("inf"))
        order = torch.sort(pooled, dim=-1, descending=True, stable=True).indices[..., :n_sel]
        order = torch.sort(order, dim=-1).values
        order = torch.where(order > qb[None, None, :, None], torch.full_like(order, -1), order)
        out[:, :, a:b] = order
    return out


def sparse_attention_ref(q, k, v, idx, c, q_chunk=256):
    """Softmax attention restricted to the selected blocks (+ causal). q [B,H,T,D], k/v [B,Hk,L,D]."""
    B, H, T, D = q.shape
    Hk, L = k.shape[1], k.shape[2]
    G = H // Hk
    bs = c.block_size
    nb = (L + bs - 1) // bs
    padL = nb * bs - L
    kb = F.pad(k, (0, 0, 0, padL)).view(B, Hk, nb, bs, D)
    vb = F.pad(v, (0, 0, 0, padL)).view(B, Hk, nb, bs, D)
    scale = 1.0 / math.sqrt(D)
    out = torch.empty(B, H, T, D, dtype=q.dtype, device=q.device)
    ar = torch.arange(bs, device=q.device)
    for bi in range(B):
        for g in range(Hk):
            for a in range(0, T, q_chunk):
                e = min(T, a + q_chunk)
                sel = idx[bi, g, a:e]  # [tq, n]
                valid = sel >= 0
                selc = sel.clamp(min=0)
                K = kb[bi, g][selc].reshape(e - a, -1, D)  # [tq, n*bs, D]
                V = vb[bi, g][selc].reshape(e - a, -1, D)
                kpos = (selc[..., None] * bs + ar).reshape(e - a, -1)
                tpos = torch.arange(L - T + a, L - T + e, device=q.device)
                ok = valid[..., None].expand(-1, -1, bs).reshape(e - a, -1) & (kpos <= tpos[:, None]) & (kpos < L)
                qq = q[bi, g * G:(g + 1) * G, a:e]  # [G, tq, D]
                sc = torch.einsum("gtd,tkd->gtk", qq, K) * scale
                sc = sc.masked_fill(~ok[None], float("-inf"))
                pr = torch.softmax(sc.float(), dim=-1).to(V.dtype)
                out[bi, g * G:(g + 1) * G, a:e] = torch.einsum("gtk,tkd->gtd", pr, V)
    return out


def dense_attention(q, k, v, q_chunk=2048):
    """Causal GQA softmax attention. q [B,H,T,D], k/v [B,Hk,L,D] with L == T."""
    B, H, T, D = q.shape
    G = H // k.shape[1]
    if hasattr(F, "scaled_dot_product_attention") and q.is_cuda:
        kk = k.repeat_interleave(G, dim=1) if G > 1 else k
        vv = v.repeat_interleave(G, dim=1) if G > 1 else v
        return F.scaled_dot_product_attention(q, kk, vv, is_causal=True)
    kk = k.repeat_interleave(G, dim=1)
    vv = v.repeat_interleave(G, dim=1)
    out = torch.empty_like(q)
    scale = 1.0 / math.sqrt(D)
    for a in range(0, T, q_chunk):
        e = min(T, a + q_chunk)
        sc = torch.matmul(q[:, :, a:e], kk[:, :, :e].transpose(-1, -2)) * scale
        tpos = torch.arange(a, e, device=q.device)
        m = torch.arange(e, device=q.device)[None, :] > tpos[:, None]
        sc = sc.masked_fill(m, float("-inf"))
        out[:, :, a:e] = torch.matmul(torch.softmax(sc.float(), -1).to(vv.dtype), vv[:, :, :e])
    return out


_FLEX = {}


def sparse_attention_flex(q, k, v, idx, c):
    """Same function as sparse_attention_ref through flex_attention (GPU, training)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    B, H, T, D = q.shape
    Hk = k.shape[1]
    G = H // Hk
    bs = c.block_size
    TB = 128
    assert T % TB == 0 and TB % bs == 0
    nb = T // bs
    sel = torch.zeros(B, Hk, T, nb + 1, dtype=torch.bool, device=q.device)
    sel.scatter_(-1, torch.where(idx < 0, torch.full_like(idx, nb), idx), True)
    sel = sel[..., :nb].contiguous()
    r = TB // bs
    tiles = sel.view(B, Hk, T // TB, TB, nb // r, r).any(5).any(3)  # [B,Hk,nqt,nkt]
    if G > 1:
        tiles = tiles.repeat_interleave(G, dim=1)
    kv_num = tiles.sum(-1, dtype=torch.int32)
    kv_idx = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)

    def mask_mod(b, h, q_idx, kv_idx_):
        return sel[b, h // G, q_idx, kv_idx_ // bs] & (kv_idx_ <= q_idx)

    bm = BlockMask.from_kv_blocks(kv_num, kv_idx, BLOCK_SIZE=TB, mask_mod=mask_mod)
    return _FLEX["fn"](q, k, v, block_mask=bm, enable_gqa=(G > 1), scale=1.0 / math.sqrt(D))


class SparseAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, Hk = c.num_attention_heads, c.num_key_value_heads
        D = c.sparse_head_dim
        self.H, self.Hk, self.D = H, Hk, D
        self.q_proj = nn.Linear(c.hidden_size, H * D, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, Hk * D, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, Hk * D, bias=False)
        self.o_proj = nn.Linear(H * D, c.hidden_size, bias=False)
        self.o_gate = nn.Linear(c.hidden_size, H * D, bias=False)

    def forward(self, x, cos, sin, opts):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.Hk, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.Hk, self.D).transpose(1, 2)
        if T < self.c.dense_len or opts.get("force_dense"):
            o = dense_attention(q, k, v)
        else:
            idx = select_blocks(q, k, self.c, q_chunk=opts.get("sel_chunk", 1024))
            if opts.get("record_topk") is not None:
                opts["record_topk"].append(idx)
            if opts.get("impl", "ref") == "flex":
                o = sparse_attention_flex(q, k, v, idx, self.c)
            else:
                o = sparse_attention_ref(q, k, v, idx, self.c, q_chunk=opts.get("attn_chunk", 256))
        o = o.transpose(1, 2).reshape(B, T, self.H * self.D)
        o = o * torch.sigmoid(self.o_gate(x))
        return self.o_proj(o)


# --------------------------------------------------------------------------- model
class DecoderLayer(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        self.c = c
        self.sparse = c.is_sparse(i)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = SparseAttention(c) if self.sparse else LightningAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, opts):
        r = self.c.residual_scale
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, opts) * r
        return h + self.mlp(self.post_attention_layernorm(h)) * r


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(c, i) for i in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class SalaForCausalLM(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = config if isinstance(config, SalaConfig) else SalaConfig(config)
        self.c = c
        self.model = Backbone(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def hidden(self, ids, opts=None):
        opts = opts or {}
        c = self.c
        B, T = ids.shape
        x = self.model.embed_tokens(ids) * c.scale_emb
        pos = torch.arange(T, device=ids.device)
        cos, sin = rope_cos_sin(pos, c.head_dim, c.rope_theta, ids.device)
        ckpt = opts.get("checkpoint", False) and self.training
        for layer in self.model.layers:
            if ckpt:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, opts, use_reentrant=False)
            else:
                x = layer(x, cos, sin, opts)
        return self.model.norm(x)

    def logits_from_hidden(self, h):
        return self.lm_head(h / self.c.logit_div).float()

    def forward(self, ids, opts=None, positions=None):
        """Logits [B, T, V] (or only at `positions`, a LongTensor of indices into T)."""
        h = self.hidden(ids, opts)
        if positions is not None:
            h = h[:, positions]
        return self.logits_from_hidden(h)

    def init_weights(self, std=0.02, seed=0):
        g = torch.Generator().manual_seed(seed)
        L = self.c.num_hidden_layers
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
                continue
            s = std
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                s = std / math.sqrt(2 * L)
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * s)


def load_state(model, tensors):
    """tensors: {name: np.ndarray float32} -> copy into model (strict)."""
    sd = model.state_dict()
    missing = [k for k in sd if k not in tensors]
    extra = [k for k in tensors if k not in sd]
    assert not missing and not extra, (missing[:5], extra[:5])
    with torch.no_grad():
        for k, v in sd.items():
            v.copy_(torch.from_numpy(tensors[k]).to(v.dtype))
