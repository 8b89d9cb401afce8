"""A model's hyperparameters, parsed once from its config.json for every user: converter, estimate, AWQ.

The config is read as llama.cpp's converter reads it: a multimodal checkpoint's ``text_config`` is merged
over the top level, and rope settings come from ``rope_parameters`` (transformers 5) or ``rope_scaling``.
The training context is the model's own ``max_position_embeddings`` (or the key its family uses instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.errors import NibbleError

CONTEXT_KEYS = ("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                "model_max_length")


def text_config(config: dict) -> dict:
    """The language model's settings: ``text_config`` (multimodal checkpoints) over the top level."""
    tc = config.get("text_config")
    return {**config, **tc} if isinstance(tc, dict) else dict(config)


def rope_parameters(cfg: dict) -> dict:
    """Rope settings in one dict: ``rope_parameters`` or ``rope_scaling``, with the top-level theta and
    original context mirrored in when the dict lacks them (as transformers 4 configs keep them apart)."""
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if "full_attention" in rp or "sliding_attention" in rp:
        return rp
    for key, names in (("rope_theta", ("rope_theta", "rotary_emb_base")),
                       ("partial_rotary_factor", ("partial_rotary_factor",)),
                       ("original_max_position_embeddings", ("original_max_position_embeddings",))):
        if key not in rp:
            for n in names:
                if cfg.get(n) is not None:
                    rp[key] = cfg[n]
                    break
    if "rope_type" not in rp and rp.get("type") is not None:
        rp["rope_type"] = rp["type"]
    return rp


def global_rope(cfg: dict) -> dict:
    """The rope settings of full-attention layers (models with per-layer-type rope keep them apart)."""
    rp = rope_parameters(cfg)
    return rp.get("full_attention", rp)


def rope_type(cfg: dict) -> str:
    rp = global_rope(cfg)
    return str(rp.get("rope_type") or rp.get("type") or "default").lower()


def first(cfg: dict, keys: tuple[str, ...], default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


@dataclass(frozen=True)
class Hparams:
    """The shape of a decoder, as llama.cpp sizes it."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    n_vocab: int
    rope_theta: float
    rms_eps: float
    tie_embeddings: bool
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_expert: int = 0
    n_ff_shared: int = 0
    sliding_window: int = 0

    @classmethod
    def parse(cls, cfg: dict, *, where: str = "config.json", use_head_dim: bool = True,
              default_theta: float = 10000.0) -> "Hparams":
        """``cfg`` is the merged text config; ``where`` names the file in error messages."""
        def need(keys: tuple[str, ...]):
            v = first(cfg, keys)
            if v is None:
                raise NibbleError(f"{where} lacks {keys[0]}; this does not look like a complete model config")
            return v

        try:
            n_embd = int(need(("hidden_size", "n_embd", "dim")))
            n_head = int(need(("num_attention_heads", "n_head", "n_heads")))
            head_dim = cfg.get("head_dim") if use_head_dim else None
            return cls(
                n_layer=int(need(("num_hidden_layers", "n_layers", "n_layer", "num_layers"))),
                n_embd=n_embd,
                n_ff=int(first(cfg, ("intermediate_size", "n_inner", "hidden_dim"), 0) or 0),
                n_head=n_head,
                n_head_kv=int(first(cfg, ("num_key_value_heads", "n_kv_heads"), n_head) or n_head),
                head_dim=int(head_dim or n_embd // n_head),
                n_ctx_train=int(need(CONTEXT_KEYS)),
                n_vocab=int(cfg.get("vocab_size") or 0),
                rope_theta=float(global_rope(cfg).get("rope_theta", default_theta)),
                rms_eps=float(first(cfg, ("rms_norm_eps", "norm_eps", "layer_norm_eps"), 1e-6)),
                tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                n_expert=int(first(cfg, ("num_local_experts", "num_experts", "n_routed_experts"), 0) or 0),
                n_expert_used=int(first(cfg, ("num_experts_per_tok", "num_experts_per_token", "top_k_experts"), 0)
                                  or 0),
                n_ff_expert=int(cfg.get("moe_intermediate_size") or 0),
                n_ff_shared=int(cfg.get("shared_expert_intermediate_size") or 0),
                sliding_window=int(cfg.get("sliding_window") or 0),
            )
        except (TypeError, ValueError) as exc:
            raise NibbleError(f"{where} has a hyperparameter of the wrong type ({exc}); download it again") from exc
