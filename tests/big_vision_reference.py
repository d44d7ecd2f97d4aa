"""A tiny big_vision PaliGemma written from big_vision's own module code, and its forward pass in numpy.

Independent of vlmkit's weight map on purpose: parameter names and shapes follow
``big_vision/models/vit.py`` (flax ``nn.Conv`` / ``nn.Dense`` / ``MultiHeadDotProductAttention`` /
``nn.LayerNorm``), ``big_vision/models/ppp/gemma.py`` (``Einsum`` shapes, ``RMSNorm`` with ``1 + scale``,
``_apply_rope``, ``Block`` with Gemma 2's ``post_norms``) and ``proj/paligemma/paligemma.py``
(``img/head`` to the LM width, text embeddings scaled by sqrt(width), prefix-LM ``make_attn_mask``); the
forward is their einsum equations transcribed. A test converts the npz with vlmkit and compares
transformers' logits with :func:`forward`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TinyPaliGemma:
    width: int = 64           # gemma width D
    depth: int = 2
    mlp_dim: int = 128
    num_heads: int = 4
    num_kv_heads: int = 1
    head_dim: int = 16
    vocab_size: int = 1856
    post_norms: bool = False  # Gemma 2 (PaliGemma 2)
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    v_width: int = 48
    v_depth: int = 2
    v_mlp: int = 96
    v_heads: int = 4
    patch: int = 14
    image: int = 56


def make_params(cfg: TinyPaliGemma, seed: int = 0) -> dict[str, np.ndarray]:
    """Flattened ``params`` tree of a scanned big_vision PaliGemma (stacked layer axis first)."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=None):
        fan_in = shape[-2] if len(shape) > 1 else 1
        return (rng.standard_normal(shape) * (scale or fan_in ** -0.5)).astype(np.float32)

    L, vL, D, N, K, H, F = cfg.depth, cfg.v_depth, cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    vD, vN, vF = cfg.v_width, cfg.v_heads, cfg.v_mlp
    vH, tokens = vD // vN, (cfg.image // cfg.patch) ** 2
    p = {
        "img/embedding/kernel": w(cfg.patch, cfg.patch, 3, vD, scale=0.05),
        "img/embedding/bias": w(vD, scale=0.1),
        "img/pos_embedding": w(1, tokens, vD, scale=0.3),
        "img/Transformer/encoder_norm/scale": 1 + w(vD, scale=0.1),
        "img/Transformer/encoder_norm/bias": w(vD, scale=0.1),
        "img/head/kernel": w(vD, D),
        "img/head/bias": w(D, scale=0.1),
        "llm/embedder/input_embedding": w(cfg.vocab_size, D, scale=0.5),
        "llm/final_norm/scale": w(D, scale=0.1),
    }
    block = "img/Transformer/encoderblock/"
    for ln in ("LayerNorm_0", "LayerNorm_1"):
        p[f"{block}{ln}/scale"] = 1 + w(vL, vD, scale=0.1)
        p[f"{block}{ln}/bias"] = w(vL, vD, scale=0.1)
    for proj in ("query", "key", "value"):
        p[f"{block}MultiHeadDotProductAttention_0/{proj}/kernel"] = w(vL, vD, vN, vH, scale=vD ** -0.5)
        p[f"{block}MultiHeadDotProductAttention_0/{proj}/bias"] = w(vL, vN, vH, scale=0.1)
    p[f"{block}MultiHeadDotProductAttention_0/out/kernel"] = w(vL, vN, vH, vD, scale=vD ** -0.5)
    p[f"{block}MultiHeadDotProductAttention_0/out/bias"] = w(vL, vD, scale=0.1)
    p[f"{block}MlpBlock_0/Dense_0/kernel"] = w(vL, vD, vF)
    p[f"{block}MlpBlock_0/Dense_0/bias"] = w(vL, vF, scale=0.1)
    p[f"{block}MlpBlock_0/Dense_1/kernel"] = w(vL, vF, vD)
    p[f"{block}MlpBlock_0/Dense_1/bias"] = w(vL, vD, scale=0.1)
    layers = "llm/layers/"
    norms = ["pre_attention_norm", "pre_ffw_norm"] + (["post_attention_norm", "post_ffw_norm"] if cfg.post_norms else [])
    for norm in norms:
        p[f"{layers}{norm}/scale"] = w(L, D, scale=0.1)
    if K == N:
        p[f"{layers}attn/qkv_einsum/w"] = w(L, 3, N, D, H, scale=D ** -0.5)
    else:
        p[f"{layers}attn/q_einsum/w"] = w(L, N, D, H, scale=D ** -0.5)
        p[f"{layers}attn/kv_einsum/w"] = w(L, 2, K, D, H, scale=D ** -0.5)
    p[f"{layers}attn/attn_vec_einsum/w"] = w(L, N, H, D, scale=(N * H) ** -0.5)
    p[f"{layers}mlp/gating_einsum"] = w(L, 2, D, F, scale=D ** -0.5)
    p[f"{layers}mlp/linear"] = w(L, F, D, scale=F ** -0.5)
    return p


def unscan(params: dict[str, np.ndarray], llm_template: str = "llm/layers/{i}/") -> dict[str, np.ndarray]:
    """The unscanned layout (``nn.scan`` off): one sub-tree per layer (vit: ``encoderblock_{i}``)."""
    out = {}
    for name, value in params.items():
        for stacked, template in (("img/Transformer/encoderblock/", "img/Transformer/encoderblock_{i}/"),
                                  ("llm/layers/", llm_template)):
            if name.startswith(stacked):
                for i in range(value.shape[0]):
                    out[template.format(i=i) + name[len(stacked):]] = value[i]
                break
        else:
            out[name] = value
    return out


def save_npz(path, params: dict[str, np.ndarray], prefix: str = "", bf16: bool = False) -> None:
    """As big_vision's ``np.savez`` of jax arrays: bfloat16 comes out as a 2-byte void dtype."""
    import ml_dtypes

    arrays = {}
    for name, value in params.items():
        arrays[prefix + name] = value.astype(ml_dtypes.bfloat16).view("V2") if bf16 else value
    np.savez(path, **arrays)


# --- forward -------------------------------------------------------------------------------------
def _gelu(x):  # flax nn.gelu(approximate=True)
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _rms_norm(x, scale):
    return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-6) * (1 + scale)


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _rope(x, positions, max_wavelength=10_000):
    freq_exponents = (2.0 / x.shape[-1]) * np.arange(x.shape[-1] // 2)
    timescale = max_wavelength ** freq_exponents
    radians = (positions[:, None] / timescale[None, :])[:, None, :]
    sin, cos = np.sin(radians), np.cos(radians)
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def vit(p: dict[str, np.ndarray], cfg: TinyPaliGemma, image: np.ndarray) -> np.ndarray:
    """``img`` model, pool_type none, then ``img/head``: image (H, W, 3) in [-1, 1] -> (tokens, D)."""
    P = cfg.patch
    g = cfg.image // P
    patches = image.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4)                # (gh, gw, P, P, C)
    x = np.einsum("abijc,ijcd->abd", patches, p["img/embedding/kernel"]) + p["img/embedding/bias"]
    x = x.reshape(g * g, -1) + p["img/pos_embedding"][0]
    blk = "img/Transformer/encoderblock/"
    att = blk + "MultiHeadDotProductAttention_0/"
    for i in range(cfg.v_depth):
        y = _layer_norm(x, p[blk + "LayerNorm_0/scale"][i], p[blk + "LayerNorm_0/bias"][i])
        q, k, v = (np.einsum("td,dnh->tnh", y, p[f"{att}{n}/kernel"][i]) + p[f"{att}{n}/bias"][i]
                   for n in ("query", "key", "value"))
        q = q / np.sqrt(q.shape[-1])
        probs = _softmax(np.einsum("tnh,snh->nts", q, k))
        y = np.einsum("tnh,nhd->td", np.einsum("nts,snh->tnh", probs, v), p[att + "out/kernel"][i])
        x = x + y + p[att + "out/bias"][i]
        y = _layer_norm(x, p[blk + "LayerNorm_1/scale"][i], p[blk + "LayerNorm_1/bias"][i])
        y = _gelu(y @ p[blk + "MlpBlock_0/Dense_0/kernel"][i] + p[blk + "MlpBlock_0/Dense_0/bias"][i])
        x = x + y @ p[blk + "MlpBlock_0/Dense_1/kernel"][i] + p[blk + "MlpBlock_0/Dense_1/bias"][i]
    x = _layer_norm(x, p["img/Transformer/encoder_norm/scale"], p["img/Transformer/encoder_norm/bias"])
    return x @ p["img/head/kernel"] + p["img/head/bias"]


def make_attn_mask(mask_ar: np.ndarray) -> np.ndarray:
    """big_vision paligemma.make_attn_mask for one unpadded sequence."""
    cumsum = np.cumsum(mask_ar)
    return cumsum[None, :] <= cumsum[:, None]


def gemma(p: dict[str, np.ndarray], cfg: TinyPaliGemma, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``llm`` on embedded inputs x (T, D) with attention mask (T, T) -> logits (T, vocab)."""
    T, N, K, H = x.shape[0], cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    positions = np.arange(T)
    lay = "llm/layers/"
    for i in range(cfg.depth):
        y = _rms_norm(x, p[lay + "pre_attention_norm/scale"][i])
        if K == N:
            q, k, v = np.einsum("SD,CKDH->CSKH", y, p[lay + "attn/qkv_einsum/w"][i])
        else:
            q = np.einsum("TD,NDH->TNH", y, p[lay + "attn/q_einsum/w"][i])
            k, v = np.einsum("SD,CKDH->CSKH", y, p[lay + "attn/kv_einsum/w"][i])
        q = _rope(q, positions) * H ** -0.5
        k = _rope(k, positions)
        q = q.reshape(T, K, N // K, H)
        logits = np.einsum("TKGH,SKH->KGTS", q, k)
        if cfg.attn_softcap:
            logits = np.tanh(logits / cfg.attn_softcap) * cfg.attn_softcap
        logits = np.where(mask[None, None], logits, -2.3819763e38)
        encoded = np.einsum("KGTS,SKH->TKGH", _softmax(logits), v).reshape(T, N, H)
        out = np.einsum("TNH,NHD->TD", encoded, p[lay + "attn/attn_vec_einsum/w"][i])
        if cfg.post_norms:
            out = _rms_norm(out, p[lay + "post_attention_norm/scale"][i])
        x = x + out
        y = _rms_norm(x, p[lay + "pre_ffw_norm/scale"][i])
        w = p[lay + "mlp/gating_einsum"][i]
        out = (_gelu(y @ w[0]) * (y @ w[1])) @ p[lay + "mlp/linear"][i]
        if cfg.post_norms:
            out = _rms_norm(out, p[lay + "post_ffw_norm/scale"][i])
        x = x + out
    logits = _rms_norm(x, p["llm/final_norm/scale"]) @ p["llm/embedder/input_embedding"].T
    if cfg.final_softcap:
        logits = np.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return logits


def forward(p: dict[str, np.ndarray], cfg: TinyPaliGemma, image: np.ndarray, prefix: list[int],
            suffix: list[int]) -> np.ndarray:
    """PaliGemma: [image tokens, prefix] attend to each other fully, the suffix causally (prefix-LM)."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    zimg = vit(p, cfg, image.astype(np.float64))
    tokens = np.array(prefix + suffix)
    ztxt = p["llm/embedder/input_embedding"][tokens] * np.sqrt(cfg.width)
    x = np.concatenate([zimg, ztxt])
    mask_ar = np.array([0] * (len(zimg) + len(prefix)) + [1] * len(suffix))
    return gemma(p, cfg, x, make_attn_mask(mask_ar))
