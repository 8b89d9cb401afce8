"""How much each weight matrix's rounding error costs in KL divergence: one gradient pass over calibration text.

For a small change dW of a weight W, the KL divergence of the model's next-token distribution from the
original grows as 0.5 * dW^T F dW, with F the Fisher information. Its diagonal, for a linear layer
y = W x, is E[dy_i^2 x_j^2], where dy is the gradient of log p(y~) with the label y~ sampled from the
model itself. Nibble keeps it factored, as the importance matrix does: per output row r_i = E[dy_i^2]
and per input column c_j = E[x_j^2] (the importance matrix itself), so

    KLD(tensor at type) ~ 0.5 * sum_ij r_i c_j (W_ij - Q(W)_ij)^2           (``engine.gguf.quant_error``)

Token embeddings are a lookup, not a product: row v is weighted by how often token v occurs and columns
by E[dy_j^2] at the embedding's output. Tied embeddings add the output layer's term to the same tensor.
Weights are mapped to GGUF names and row order with the converter's own plan (``plan_tensors``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.core.errors import NibbleError
from engine.core.progress import Reporter

Pairs = list  # [(row weights | None, column weights | None)], in GGUF row / column order


def _blocks(tokenizer, text: str, n: int, seqlen: int, bos: int | None):
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = seqlen - (1 if bos is not None else 0)
    have = len(ids) // step
    if have < 1:
        raise NibbleError(f"calibration text gave {len(ids)} tokens, fewer than one window of {seqlen}; "
                          "use a longer calibration text", setting="calibration text")
    n = min(n, have)
    stride = have // n  # spread the windows over the whole text
    rows = []
    for i in range(n):
        chunk = ids[i * stride * step:(i * stride + 1) * step]
        rows.append(([bos] if bos is not None else []) + chunk)
    return torch.tensor(rows, dtype=torch.long)


def measure_sensitivity(model_dir: str | Path, text: str, *, windows: int = 16, seqlen: int = 512,
                        seed: int = 0, reporter: Reporter | None = None) -> dict[str, Pairs]:
    """GGUF tensor name -> weight pairs for ``engine.gguf.quant_error.measure_errors``, from ``windows``
    windows of ``seqlen`` tokens of ``text`` run through the Hugging Face model in ``model_dir`` (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.gguf.convert import plan_tensors
    from engine.models.source import open_source

    reporter = reporter or Reporter()
    src = open_source(model_dir)
    planned = {t.hf_name: t for t in plan_tensors(src) if t.hf_name}
    try:
        tok = AutoTokenizer.from_pretrained(str(src.path), local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(src.path), dtype=torch.float32, local_files_only=True,
                                                     trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise NibbleError(f"transformers could not load {src.path} to measure sensitivity "
                          f"({type(exc).__name__}); check that it is a complete model folder") from None
    model.eval()
    cfg_bos = getattr(model.config, "bos_token_id", None)
    bos = cfg_bos if isinstance(cfg_bos, int) and getattr(tok, "add_bos_token", True) is not False else None
    blocks = _blocks(tok, text, windows, seqlen, bos)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    emb = model.get_input_embeddings()
    rows: dict[str, torch.Tensor] = {}
    cols: dict[str, torch.Tensor] = {}
    n_tok = 0
    handles = []

    def fwd(name):
        def hook(_m, inp, _out):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1])
            cols[name] = cols.get(name, 0) + (x * x).sum(0)
        return hook

    def bwd(name):
        def hook(_m, _gin, gout):
            g = gout[0].detach().reshape(-1, gout[0].shape[-1])
            rows[name] = rows.get(name, 0) + (g * g).sum(0)
        return hook

    for name, m in linears.items():
        handles += [m.register_forward_hook(fwd(name)), m.register_full_backward_hook(bwd(name))]
    counts = torch.zeros(emb.weight.shape[0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for i, block in enumerate(blocks):
            reporter.check_cancel()
            x = block[None]
            counts += torch.bincount(block, minlength=counts.numel()).double()[: counts.numel()]
            with torch.enable_grad():
                h = emb(x).detach().requires_grad_(True)
                logits = model(inputs_embeds=h).logits.float()[0]
                logp = torch.log_softmax(logits, -1)
                y = torch.multinomial(logp.detach().exp(), 1, generator=gen)[:, 0]
                # the embedding's backward hook does not fire on inputs_embeds; take the gradient directly
                (g_h,) = torch.autograd.grad(logp.gather(1, y[:, None]).sum(), h)
            rows["<embed>"] = rows.get("<embed>", 0) + (g_h[0] ** 2).sum(0)
            n_tok += block.numel()
            reporter.progress(i + 1, len(blocks), f"sensitivity: window {i + 1}/{len(blocks)}", stage="sensitivity")
    finally:
        for h in handles:
            h.remove()
    return _to_gguf(planned, linears, rows, cols, counts, n_tok, src)


def _rows_as_converted(r: np.ndarray, t) -> np.ndarray | None:
    """Per-row weights taken through the converter's row transforms of ``t`` (q/k permutation, head regrouping,
    row picks and slices); None when a transform also moves columns, so only an average still lines up."""
    from engine.models.families.tensors import permute_qk, pick, regroup

    v = r.reshape(-1, 1)
    for op, arg in t.ops:
        if op == "permute":
            v = permute_qk(v, int(arg))
        elif op == "rows":
            v = v[: int(arg)]
        elif op == "regroup" and int(arg[0]) == 0:
            v = regroup(v, *(int(a) for a in arg))
        elif op == "pick":
            v = pick(v, *arg)
        elif op == "slice" and int(arg[0]) == 0:
            v = v[int(arg[1]):int(arg[2])]
        elif op not in ("add", "neg_exp"):  # values only; anything else reorders columns too
            return None
    return v.reshape(-1)


def _to_gguf(planned, linears, rows, cols, counts, n_tok, src) -> dict[str, Pairs]:
    out: dict[str, Pairs] = {}
    emb_name = next((n for n, t in planned.items() if t.gguf_name == "token_embd.weight"), None)
    for name, m in linears.items():
        if name not in rows or name not in cols:
            continue
        hf = f"{name}.weight"
        t = planned.get(hf)
        r = (rows[name] / n_tok).double().numpy()
        c = (cols[name] / n_tok).double().numpy()
        if t is None and name == "lm_head" and emb_name:  # tied: the output layer is the token embedding
            t = planned[emb_name]
        if t is None:
            continue
        rows_here = _rows_as_converted(r, t)
        if rows_here is None or tuple(t.shape) != (rows_here.size, c.size):
            # fused, split or reordered on conversion: keep what still lines up (columns, if they kept their
            # order and number; else only the averages)
            scale = float(r.mean())
            r = None
            keep_cols = rows_here is not None and c.size == t.shape[-1]
            c = c * scale if keep_cols else np.full(t.shape[-1], scale * float(c.mean()))
        else:
            r = rows_here
        out.setdefault(t.gguf_name, []).append((r, c))
    if emb_name and "<embed>" in rows:
        freq = (counts + 1.0) / (n_tok + counts.numel())  # every token a little weight, unseen ones too
        out.setdefault("token_embd.weight", []).append(
            (freq.numpy(), (rows["<embed>"] / n_tok).double().numpy()))
    return out


def save_pairs(pairs: dict[str, Pairs], path: str | Path) -> None:
    """Write the weights for the worker (``np.savez``; None stored as an empty array)."""
    arrays = {}
    for name, plist in pairs.items():
        for k, (r, c) in enumerate(plist):
            arrays[f"{name}|{k}|r"] = np.zeros(0) if r is None else np.asarray(r, dtype=np.float64)
            arrays[f"{name}|{k}|c"] = np.zeros(0) if c is None else np.asarray(c, dtype=np.float64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_pairs(path: str | Path) -> dict[str, Pairs]:
    data = np.load(path)
    out: dict[str, dict[int, list]] = {}
    for key in data.files:
        name, k, which = key.rsplit("|", 2)
        slot = out.setdefault(name, {}).setdefault(int(k), [None, None])
        arr = data[key]
        slot[0 if which == "r" else 1] = arr if arr.size else None
    return {name: [tuple(v[k]) for k in sorted(v)] for name, v in out.items()}
