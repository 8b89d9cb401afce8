"""Which ggml type the GGUF quantizer gives each tensor, for each llama.cpp file type.

This follows the behaviour of llama.cpp's quantizer (the version bundled with llama-cpp-python), so that
sizes can be predicted in microseconds instead of running it:

* only tensors of two or more dimensions whose name ends in ``weight`` are quantized; norms, the MoE
  router (``ffn_gate_inp``), positional embeddings and a few small special tensors keep their type;
* the output matrix (and the token embeddings when they are tied to it) get Q6_K, or Q8_0 when their rows
  do not split into 256-blocks (Q5_K for the 1- and 2-bit IQ mixtures);
* the K-quant "M"/"L" mixtures give attn_v and ffn_down more bits in the first and last eighth of the
  layers and every third layer between them; 70B-class models and 8-expert models get attn_v promoted;
* a tensor whose row length is not a multiple of the type's block size falls back to a 32-block type of
  similar size (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, 2/3-bit -> Q4_0, IQ -> IQ4_NL), and to F16 when
  even that does not divide.

Tests compare the result with the quantizer's own dry run.
"""

from __future__ import annotations

import gguf

from engine.core.errors import NibbleError
from engine.gguf.types import parse_type

QT = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# file type -> the type most tensors get
DEFAULT_TYPE: dict[FT, QT] = {
    FT.ALL_F32: QT.F32, FT.MOSTLY_F16: QT.F16, FT.MOSTLY_BF16: QT.BF16,
    FT.MOSTLY_Q4_0: QT.Q4_0, FT.MOSTLY_Q4_1: QT.Q4_1, FT.MOSTLY_Q5_0: QT.Q5_0, FT.MOSTLY_Q5_1: QT.Q5_1,
    FT.MOSTLY_Q8_0: QT.Q8_0, FT.MOSTLY_Q1_0: QT.Q1_0, FT.MOSTLY_MXFP4_MOE: QT.MXFP4,
    FT.MOSTLY_Q2_K: QT.Q2_K, FT.MOSTLY_Q2_K_S: QT.Q2_K,
    FT.MOSTLY_Q3_K_S: QT.Q3_K, FT.MOSTLY_Q3_K_M: QT.Q3_K, FT.MOSTLY_Q3_K_L: QT.Q3_K,
    FT.MOSTLY_Q4_K_S: QT.Q4_K, FT.MOSTLY_Q4_K_M: QT.Q4_K,
    FT.MOSTLY_Q5_K_S: QT.Q5_K, FT.MOSTLY_Q5_K_M: QT.Q5_K, FT.MOSTLY_Q6_K: QT.Q6_K,
    FT.MOSTLY_TQ1_0: QT.TQ1_0, FT.MOSTLY_TQ2_0: QT.TQ2_0,
    FT.MOSTLY_IQ2_XXS: QT.IQ2_XXS, FT.MOSTLY_IQ2_XS: QT.IQ2_XS, FT.MOSTLY_IQ2_S: QT.IQ2_XS,
    FT.MOSTLY_IQ2_M: QT.IQ2_S, FT.MOSTLY_IQ3_XS: QT.IQ3_S, FT.MOSTLY_IQ3_XXS: QT.IQ3_XXS,
    FT.MOSTLY_IQ1_S: QT.IQ1_S, FT.MOSTLY_IQ1_M: QT.IQ1_M, FT.MOSTLY_IQ4_NL: QT.IQ4_NL,
    FT.MOSTLY_IQ4_XS: QT.IQ4_XS, FT.MOSTLY_IQ3_S: QT.IQ3_S, FT.MOSTLY_IQ3_M: QT.IQ3_S,
}

# 256-block types and where they go when rows do not divide
_FALLBACK = {
    QT.IQ1_S: QT.IQ4_NL, QT.IQ1_M: QT.IQ4_NL, QT.IQ2_XXS: QT.IQ4_NL, QT.IQ2_XS: QT.IQ4_NL,
    QT.IQ2_S: QT.IQ4_NL, QT.IQ3_XXS: QT.IQ4_NL, QT.IQ3_S: QT.IQ4_NL, QT.IQ4_XS: QT.IQ4_NL,
    QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.TQ1_0: QT.Q4_0, QT.TQ2_0: QT.Q4_0,
    QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0,
}

_FLOAT_TYPES = {QT.F32, QT.F16, QT.BF16, QT.F64, QT.I8, QT.I16, QT.I32, QT.I64}

# Tensors that keep their type whatever the file type (substring match on the name).
_KEEP = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
         "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
         "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
         "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
         "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
         "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
         "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
         "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")

_IQ_LOW = {FT.MOSTLY_IQ2_XXS, FT.MOSTLY_IQ2_XS, FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M,
           FT.MOSTLY_IQ1_M}


def file_types() -> list[str]:
    """Names of the file types this module can size, e.g. ``Q4_K_M``, in llama.cpp's numbering order."""
    return list(_BY_NAME)


def ft_name(ft: FT) -> str:
    return ft.name.replace("MOSTLY_", "").replace("ALL_", "")


# name -> file type, in llama.cpp's numbering order (the app estimates every type on each change of a setting)
_BY_NAME = {ft_name(ft): ft for ft in sorted(DEFAULT_TYPE, key=lambda f: f.value)}


def parse_file_type(name: str) -> FT:
    """The llama.cpp file type ``name`` stands for (aliases accepted: :func:`engine.gguf.types.parse_type`)."""
    return _BY_NAME[parse_type(name, file_types())]


def is_quantized(t: QT) -> bool:
    return t not in _FLOAT_TYPES


def block_size(t: QT) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def row_bytes(t: QT, ncols: int) -> int:
    blk, size = gguf.GGML_QUANT_SIZES[t]
    return ncols // blk * size


def tensor_bytes(t: QT, ne: tuple[int, ...]) -> int:
    rows = 1
    for d in ne[1:]:
        rows *= d
    return rows * row_bytes(t, ne[0])


def allows_quantization(name: str, n_dims: int) -> bool:
    if n_dims < 2 or not name.endswith("weight"):
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(k in name for k in _KEEP)


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"),
                     ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                     ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                     ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def choose_types(plan, ft: FT) -> list[QT]:
    """The type of each of ``plan.tensors`` after quantizing to file type ``ft`` (no importance matrix)."""
    default = DEFAULT_TYPE[ft]
    tensors = plan.tensors
    cats = [_category(t.name) for t in tensors]
    tied = "output" not in cats
    n_attn_v = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats)
    n_layer = plan.n_layer
    n_expert = plan.n_expert
    gqa = plan.n_gqa
    arch = plan.arch
    falcon = arch == "falcon"
    state = {"attn_v": 0, "ffn_down": 0, "ffn_gate": 0, "ffn_up": 0, "is70b": plan.is_70b_class}
    result: list[QT] = []
    for t, cat in zip(tensors, cats):
        src = QT[t.src_type]
        if not allows_quantization(t.name, t.n_dims):
            result.append(src)
            continue
        new = default
        if is_quantized(default):
            new = _mixture(new, t, cat, ft, tied, state, n_attn_v, n_layer, n_expert, gqa, arch, falcon)
            new = _fallback(new, t.ne[0])
        result.append(new)
    return result


def _layer(t, counter: int, n_expert: int) -> int:
    # with experts, tensors are not one per layer in order, so the layer comes from the name
    return t.layer if n_expert > 1 else counter


def _mixture(new: QT, t, cat: str, ft: FT, tied: bool, st: dict, n_attn_v: int, n_layer: int,
             n_expert: int, gqa: int, arch: str, falcon: bool) -> QT:
    if cat == "output" or (tied and cat == "token_embd"):
        if ft == FT.MOSTLY_MXFP4_MOE or falcon or t.ne[0] % block_size(new) != 0:
            return QT.Q8_0
        if ft in _IQ_LOW or ft == FT.MOSTLY_IQ3_XXS:
            return QT.Q5_K
        return new if new == QT.Q8_0 else QT.Q6_K
    if ft == FT.MOSTLY_MXFP4_MOE:
        return QT.MXFP4 if len(t.ne) > 2 and t.ne[2] > 1 else QT.Q8_0
    if cat == "token_embd":
        if ft in (FT.MOSTLY_IQ2_XXS, FT.MOSTLY_IQ2_XS, FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M):
            return QT.Q2_K
        if ft in (FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M, FT.MOSTLY_IQ3_XXS):
            return QT.IQ3_S
        if ft in (FT.MOSTLY_TQ1_0, FT.MOSTLY_TQ2_0):
            return QT.Q4_K
        return new
    attn_v_like = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    iq_s_m = ft in (FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M)
    if ft in _IQ_LOW:
        if attn_v_like:
            new = QT.Q4_K if (gqa >= 4 or n_expert >= 4) else (QT.IQ3_S if iq_s_m else QT.Q2_K)
            st["attn_v"] += 1
        elif n_expert == 8 and cat == "attn_k":
            new = QT.Q4_K
        elif cat == "ffn_down":
            if st["ffn_down"] < n_layer // 8:
                new = QT.IQ3_S if iq_s_m else QT.Q2_K
            st["ffn_down"] += 1
        elif cat == "attn_output":
            if n_expert == 8:
                new = QT.Q5_K
            elif ft in (FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M):
                new = QT.IQ2_XXS
            elif iq_s_m:
                new = QT.IQ3_S
        return new
    if attn_v_like:
        i = st["attn_v"]
        if ft == FT.MOSTLY_Q2_K:
            new = QT.Q4_K if gqa >= 4 else QT.Q3_K
        elif ft == FT.MOSTLY_Q2_K_S and gqa >= 4:
            new = QT.Q4_K
        elif ft == FT.MOSTLY_IQ3_XXS:
            new = QT.Q4_K if gqa >= 4 else QT.IQ3_S
        elif ft in (FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_S) and gqa >= 4:
            new = QT.Q4_K
        elif ft == FT.MOSTLY_IQ3_M:
            new = QT.Q4_K
        elif ft == FT.MOSTLY_Q3_K_M:
            new = QT.Q5_K if i < 2 else QT.Q4_K
        elif ft == FT.MOSTLY_Q3_K_L:
            new = QT.Q5_K
        elif ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and gqa >= 4:
            new = QT.Q5_K
        elif ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _more_bits(i, n_attn_v):
            new = QT.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and i < 4:
            new = QT.Q5_K
        if st["is70b"] and new in (QT.Q3_K, QT.Q4_K):
            new = QT.Q5_K
        if n_expert == 8:
            new = QT.Q8_0
        st["attn_v"] += 1
        return new
    if cat == "attn_k":
        if n_expert == 8:
            return QT.Q8_0
        if ft == FT.MOSTLY_IQ3_XS:
            return QT.IQ3_XXS
        if ft == FT.MOSTLY_IQ3_XXS:
            return QT.IQ2_S
        return new
    if cat == "attn_q":
        if ft == FT.MOSTLY_IQ3_XS:
            return QT.IQ3_XXS
        if ft == FT.MOSTLY_IQ3_XXS:
            return QT.IQ2_S
        return new
    if cat == "ffn_down":
        i = _layer(t, st["ffn_down"], n_expert)
        n = n_layer
        if ft == FT.MOSTLY_Q2_K:
            new = QT.Q3_K
        elif ft == FT.MOSTLY_Q2_K_S:
            if i < n // 8:
                new = QT.Q4_K
        elif ft == FT.MOSTLY_IQ3_XXS:
            new = QT.Q4_K if i < n // 8 else QT.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            new = QT.Q5_K if i < n // 16 else (QT.Q4_K if not falcon or _more_bits(i, n) else QT.Q3_K)
        elif ft == FT.MOSTLY_IQ3_M and (i < n // 8 or (n_expert == 8 and _more_bits(i, n))):
            new = QT.Q4_K
        elif ft == FT.MOSTLY_Q3_K_L:
            new = QT.Q4_K if falcon else QT.Q5_K
        elif ft == FT.MOSTLY_Q4_K_M:
            if falcon:
                new = QT.Q6_K if i < n // 16 else (QT.Q5_K if _more_bits(i, n) else QT.Q4_K)
            elif _more_bits(i, n):
                new = QT.Q6_K
        elif i < n // 8 and ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS):
            new = QT.Q5_K
        elif ft == FT.MOSTLY_Q5_K_M and _more_bits(i, n):
            new = QT.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and not falcon and i < n // 8:
            new = QT.Q5_K
        st["ffn_down"] += 1
        return new
    if cat == "attn_output":
        if not falcon:
            if n_expert == 8:
                if ft in (FT.MOSTLY_Q2_K, FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_XXS, FT.MOSTLY_Q3_K_S,
                          FT.MOSTLY_Q3_K_M, FT.MOSTLY_IQ4_NL, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M,
                          FT.MOSTLY_IQ3_S, FT.MOSTLY_IQ3_M, FT.MOSTLY_IQ4_XS):
                    new = QT.Q5_K
            else:
                new = {FT.MOSTLY_Q2_K: QT.Q3_K, FT.MOSTLY_IQ3_XXS: QT.IQ3_S, FT.MOSTLY_Q3_K_M: QT.Q4_K,
                       FT.MOSTLY_Q3_K_L: QT.Q5_K, FT.MOSTLY_IQ3_M: QT.Q4_K}.get(ft, new)
        elif ft == FT.MOSTLY_Q3_K_L:
            new = QT.Q4_K
        return new
    if cat in ("ffn_gate", "ffn_up"):
        i = _layer(t, st[cat], n_expert)
        if ft == FT.MOSTLY_IQ3_XS and n_layer // 8 <= i < 7 * n_layer // 8:
            new = QT.IQ3_XXS
        st[cat] += 1
        return new
    return new


def _fallback(new: QT, ncols: int) -> QT:
    blk = block_size(new)
    if ncols % blk == 0:
        return new
    if new in _FALLBACK:
        new = _FALLBACK[new]
    elif blk > 32:
        raise NibbleError(f"no fallback type for {new.name} when rows of {ncols} do not divide into blocks")
    if ncols % block_size(new) != 0:
        return QT.F16
    return new
