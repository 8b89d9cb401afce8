"""What a model family says about itself, once: the base every family module builds on.

A family names the Hugging Face architectures and model_types it serves and the GGUF architecture
llama.cpp runs them as; it maps config.json to GGUF hyperparameters, names and transforms tensors for
GGUF, adds its tokenizer settings, and tells AWQ which linears share an input and where scales fold.
The defaults here are what llama.cpp's converter does for a plain decoder; a family overrides only
where its converter differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from engine.core.errors import NibbleError
from engine.models.families.hparams import Hparams, first, global_rope, rope_parameters, rope_type, text_config
from engine.models.families.tensors import (
    PlannedTensor, intermediate_type, shape_after, shape_mismatch_error, sort_key)

_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\.weight$")
# Experts stored already stacked: one 3-D tensor per layer, gate and up fused along the rows
_STACKED = re.compile(r"^(.*\.experts)\.(gate_up_proj|down_proj)(\.weight)?$")
# Parts of multimodal checkpoints that are not the language model (llama.cpp leaves them out as well).
_NOT_TEXT = re.compile(r"(^|\.)(vision_tower|vision_model|visual|audio_tower|audio_model|multi_modal_projector|"
                       r"mm_projector|embed_vision|embed_audio)\.")


@dataclass(frozen=True)
class AwqSpec:
    """What AWQ needs of a decoder layer (module paths relative to the layer).

    ``qkv`` are the linears fed by ``attn_norm``, ``mlp_in`` those fed by ``mlp_norm``: each group shares
    one input, so one scale is searched for it and folded into that norm (whose weight means
    ``Family.norm_offset + w``). o's scales fold into the last ``o.in_features`` rows of ``v`` (a fused
    qkv projection ends with v) when no key/value head is shared; down's into the last ``down.in_features``
    rows of ``up`` (a fused gate_up projection ends with up). ``attn_post_norm``/``mlp_post_norm`` are
    applied to a block's output before the residual add (Gemma), ``residual_multiplier`` and
    ``embedding_multiplier`` name config keys the model's own forward multiplies by (Granite).
    """

    attn: str = "self_attn"
    mlp: str = "mlp"
    attn_norm: str = "input_layernorm"
    qkv: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    v: str = "self_attn.v_proj"
    o: str = "self_attn.o_proj"
    mlp_norm: str = "post_attention_layernorm"
    mlp_in: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj")
    up: str = "mlp.up_proj"
    down: str = "mlp.down_proj"
    attn_post_norm: str = ""
    mlp_post_norm: str = ""
    residual_multiplier: str = ""
    embedding_multiplier: str = ""
    no_clip: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj")  # as AutoAWQ: clipping q/k hurts scores

    @property
    def linears(self) -> tuple[str, ...]:
        return (*self.qkv, self.o, *self.mlp_in, self.down)


LLAMA_AWQ = AwqSpec()


class Family:
    """A plain decoder as llama.cpp's converter handles it; subclasses say where their family differs."""

    name: str = ""  # shown to users: "Llama", "Gemma 2"
    architectures: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    gguf_arch: gguf.MODEL_ARCH
    tokenizer: str = "BPE or SentencePiece"
    permute_qk: bool = False  # llama.cpp's llama graph wants q/k rows in interleaved rope order
    norm_offset: float = 0.0  # added to every "*norm.weight" (Gemma stores w - 1)
    use_head_dim: bool = True
    default_theta: float = 10000.0
    defaults: dict = {}  # values llama.cpp's converter assumes when config.json leaves them out
    rope_types: tuple[str, ...] = ("default", "linear", "yarn")
    skip_lm_head: bool = False
    text_of_multimodal: bool = False  # converts the language model of an ...ForConditionalGeneration
    bpe_pre: dict[str, str] = {}  # pre-tokenizer names the family's converter writes for a detected pattern
    special_tokens: dict[str, str] = {}  # special token kind -> token text, set where the files leave it unset
    awq: AwqSpec | None = None
    awq_refusal: str = ""  # why AWQ refuses the family, when ``awq`` is None

    # ------------------------------------------------------------------------------------ config

    def config(self, raw: dict) -> dict:
        """config.json as this family reads it: text_config merged, the converter's defaults under it."""
        return {**self.defaults, **text_config(raw)}

    def hparams(self, cfg: dict, where: str = "config.json") -> Hparams:
        return Hparams.parse(cfg, where=where, use_head_dim=self.use_head_dim, default_theta=self.default_theta)

    def check(self, raw: dict, where: str) -> None:
        """Refuse, in one line naming the field, a variant Nibble cannot convert faithfully."""
        cfg = self.config(raw)
        rt = rope_type(cfg)
        if rt not in self.rope_types:
            key = "rope_parameters" if (cfg.get("rope_parameters") or not cfg.get("rope_scaling")) else "rope_scaling"
            raise NibbleError(f"{where}: {key}.rope_type {rt!r} is not one Nibble converts for {self.name} "
                              f"(it handles {', '.join(self.rope_types)}); this model cannot be converted")
        if rt in ("linear", "yarn") and global_rope(cfg).get("factor") is None:
            raise NibbleError(f"{where}: rope scaling {rt!r} without a factor; the config is incomplete")
        self.hparams(cfg, where)

    def vision_note(self, raw: dict) -> str | None:
        """What conversion leaves out of a multimodal checkpoint, said to the user; None for text models."""
        if self.text_of_multimodal and ("vision_config" in raw or "audio_config" in raw):
            parts = [p for p in ("vision", "audio") if f"{p}_config" in raw]
            return (f"only the language model is converted; the {' and '.join(parts)} part is left out, as "
                    "llama.cpp's converter does (its projector file is a separate download)")
        return None

    # ------------------------------------------------------------------------------------ metadata

    def write_hparams(self, w: gguf.GGUFWriter, cfg: dict, hp: Hparams) -> None:
        """Hyperparameter keys, as llama.cpp's converter writes them for a plain decoder."""
        w.add_block_count(hp.n_layer)
        w.add_context_length(hp.n_ctx_train)
        w.add_embedding_length(hp.n_embd)
        n_ff = first(cfg, ("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size",
                           "n_inner", "hidden_dim"))
        if n_ff is not None:
            w.add_feed_forward_length(int(n_ff))
        w.add_head_count(hp.n_head)
        if first(cfg, ("num_key_value_heads", "n_kv_heads")) is not None:
            w.add_head_count_kv(hp.n_head_kv)
        self.write_rope_scaling(w, cfg, hp)
        rp = global_rope(cfg)
        if rp.get("rope_theta") is not None:
            w.add_rope_freq_base(float(rp["rope_theta"]))
        local = rope_parameters(cfg).get("sliding_attention", {}).get("rope_theta")
        local = local if local is not None else first(cfg, ("rope_local_base_freq", "local_rope_theta"))
        if local is not None:
            w.add_rope_freq_base_swa(float(local))
        if first(cfg, ("rms_norm_eps", "norm_eps")) is not None:
            w.add_layer_norm_rms_eps(float(first(cfg, ("rms_norm_eps", "norm_eps"))))
        if hp.n_expert:
            w.add_expert_count(hp.n_expert)
        if hp.n_expert_used:
            w.add_expert_used_count(hp.n_expert_used)
        if self.use_head_dim and cfg.get("head_dim") is not None:
            w.add_key_length(hp.head_dim)
            w.add_value_length(hp.head_dim)

    def write_rope_scaling(self, w: gguf.GGUFWriter, cfg: dict, hp: Hparams) -> None:
        rp, rt = global_rope(cfg), rope_type(cfg)
        if rt == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(rp["factor"]))
        elif rt == "yarn":
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(float(rp["factor"]))
            w.add_rope_scaling_orig_ctx_len(int(rp.get("original_max_position_embeddings", hp.n_ctx_train)))
            for key, add in (("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
                             ("attention_factor", w.add_rope_scaling_yarn_attn_factor),
                             ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                             ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
                if rp.get(key) is not None:
                    add(float(rp[key]))
        elif rt in ("su", "longrope"):
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)

    def write_vocab_extras(self, w: gguf.GGUFWriter, cfg: dict, model_dir: Path, tokenizer_config: dict) -> None:
        """Tokenizer keys the family's converter adds after the vocabulary (space prefix, BOS)."""

    def tokenizer_kind(self, detected: str, tokenizer_config: dict) -> str:
        """Which vocabulary writer to use, given what the folder holds."""
        return detected

    # ------------------------------------------------------------------------------------ tensors

    def rename(self, hf_name: str) -> str | None:
        """The name llama.cpp's tensor map knows, or None for tensors the GGUF leaves out."""
        if hf_name.endswith(".rotary_emb.inv_freq") or _NOT_TEXT.search(hf_name):
            return None
        if "language_model." in hf_name:
            hf_name = hf_name.replace("language_model.", "")
        if self.skip_lm_head and hf_name == "lm_head.weight":
            return None
        return hf_name

    def tensor_ops(self, gguf_name: str, hf_name: str, hp: Hparams, cfg: dict) -> tuple[tuple[str, object], ...]:
        """The transforms from ``hf_name`` (as renamed) to llama.cpp's tensor (see :class:`PlannedTensor`)."""
        ops: list[tuple[str, object]] = []
        if self.permute_qk and gguf_name.startswith("blk."):
            if ".attn_q." in gguf_name:
                ops.append(("permute", hp.n_head))
            elif ".attn_k." in gguf_name:
                ops.append(("permute", hp.n_head_kv))
        if self.norm_offset and hf_name.endswith("norm.weight"):
            ops.append(("add", self.norm_offset))
        return tuple(ops)

    def extra_tensors(self, cfg: dict, hp: Hparams) -> list[PlannedTensor]:
        """Tensors the converter computes from the config (rope factors)."""
        return []

    def plan_tensors(self, raw: dict, table: dict[str, tuple[tuple[int, ...], str]],
                     where: str = "config.json") -> list[PlannedTensor]:
        """The GGUF tensors for a checkpoint whose tensors are ``table`` (name -> (shape, safetensors dtype))."""
        cfg = self.config(raw)
        hp = self.hparams(cfg, where)
        name_map = gguf.get_tensor_name_map(self.gguf_arch, hp.n_layer)
        tied = "model.embed_tokens.weight" in table or "model.language_model.embed_tokens.weight" in table
        planned: list[PlannedTensor] = []
        experts: dict[str, dict[int, str]] = {}
        for hf_name, (shape, dtype) in table.items():
            name = self.rename(hf_name)
            if name is None:
                continue
            if name == "lm_head.weight" and hp.tie_embeddings and tied:
                continue  # tied: llama.cpp reuses token_embd
            parts = self.split_tensor(name, tuple(shape), cfg, where)
            if parts is not None:  # one stored tensor that llama.cpp keeps as several
                for lookup, ops in parts:
                    gname = name_map.get_name(lookup, try_suffixes=(".weight", ".bias"))
                    if gname is None:
                        raise NibbleError(f"{where}: tensor {hf_name} has no GGUF counterpart for {self.name}")
                    full = shape_after(tuple(shape), ops)
                    planned.append(PlannedTensor(gname, (hf_name,), full, intermediate_type(gname, len(full), dtype),
                                                 tuple(ops)))
                continue
            m = _EXPERT.match(name)
            if m:
                experts.setdefault(f"{m.group(1)}.{m.group(3)}", {})[int(m.group(2))] = hf_name
                continue
            gname = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if gname is None:
                raise NibbleError(f"{where}: tensor {hf_name} has no GGUF counterpart for {self.name}; "
                                  "the checkpoint does not match its config")
            ops = self.tensor_ops(gname, name, hp, cfg)
            shape = shape_after(tuple(shape), ops)
            planned.append(PlannedTensor(gname, (hf_name,), shape, intermediate_type(gname, len(shape), dtype), ops))
        for merged, by_index in experts.items():
            gname = name_map.get_name(merged)
            if gname is None:
                raise NibbleError(f"{where}: expert tensors {merged}.* have no GGUF counterpart for {self.name}")
            if sorted(by_index) != list(range(hp.n_expert or len(by_index))):
                raise NibbleError(f"{where}: {merged} has {len(by_index)} experts but the config says {hp.n_expert}; "
                                  "the checkpoint is incomplete")
            names = tuple(by_index[i] for i in sorted(by_index))
            shape, dtype = table[names[0]]
            full = (len(names), *shape)
            planned.append(PlannedTensor(gname + ".weight", names, full,
                                         intermediate_type(gname + ".weight", len(full), dtype)))
        planned += self.extra_tensors(cfg, hp)
        _check_widths(planned, table, hp, where)
        return sorted(planned, key=sort_key)

    def split_tensor(self, name: str, shape: tuple[int, ...], cfg: dict,
                     where: str) -> list[tuple[str, tuple]] | None:
        """The parts of a stored tensor that llama.cpp keeps as several: (a name its tensor map knows, the ops
        that cut the part out) each; None for a tensor kept whole. Experts stored stacked are: down as it is,
        gate_up split into its gate and up rows."""
        s = _STACKED.match(name)
        if s is None or len(shape) != 3:
            return None
        if s.group(2) == "down_proj":
            return [(f"{s.group(1)}.down_proj.weight", ())]
        if shape[1] % 2:
            raise NibbleError(f"{where}: {name} has {shape[1]} rows, which cannot be gate and up halves; "
                              "the checkpoint is damaged")
        n_ff = shape[1] // 2
        return [(f"{s.group(1)}.gate_proj.weight", (("slice", (1, 0, n_ff)),)),
                (f"{s.group(1)}.up_proj.weight", (("slice", (1, n_ff, 2 * n_ff)),))]

    # ------------------------------------------------------------------------------------ estimate

    swa_period: int = 0  # llama.cpp's fixed pattern: every n-th layer global, the others windowed

    def swa_pattern(self, n_layer: int) -> tuple[bool, ...]:
        n = self.swa_period
        return tuple(il % n < n - 1 for il in range(n_layer))

    def recurrent_layers(self, cfg: dict, hp: Hparams) -> tuple[bool, ...]:
        """Which layers llama.cpp runs as recurrent, a fixed-size state instead of a KV cache (empty: none)."""
        return ()

    def ssm_shape(self, cfg: dict) -> tuple[int, int, int, int] | None:
        """The recurrent layers' (conv kernel, inner size, group count, state size), as llama.cpp's ssm keys."""
        return None

    def swa_layers(self, cfg: dict, hp: Hparams) -> tuple[bool, ...]:
        """Which layers llama.cpp runs with a sliding window (empty: none)."""
        if not hp.sliding_window or cfg.get("use_sliding_window") is False:
            return ()
        layer_types = cfg.get("layer_types")
        if isinstance(layer_types, list) and len(layer_types) == hp.n_layer:
            flags = tuple(t == "sliding_attention" for t in layer_types)
        elif self.swa_period:
            flags = self.swa_pattern(hp.n_layer)
        else:  # llama.cpp runs the family with full attention
            return ()
        return flags if any(flags) else ()


def _check_widths(planned: list[PlannedTensor], table: dict, hp: Hparams, where: str) -> None:
    """Refuse weights that config.json does not describe (an edited or swapped config): the embedding's width
    and, in dense models, each FFN down projection's shape, which llama.cpp checks only when it loads the file."""
    for t in planned:
        if len(t.shape) != 2 or not t.sources:
            continue
        if t.gguf_name == "token_embd.weight":
            want = (t.shape[0], hp.n_embd)
        elif t.gguf_name.endswith(".ffn_down.weight") and not hp.n_expert and hp.n_ff:
            want = (hp.n_embd, hp.n_ff)
        else:
            continue
        if tuple(t.shape) != want:
            raise shape_mismatch_error(where, t.sources[0], table[t.sources[0]][0], want)
