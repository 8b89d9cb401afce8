"""Train the small Llama that the AWQ benchmarks quantize, when no demo model is available.

Text: the Vim user manual shipped with Debian's vim (/usr/share/vim/vim*/doc/usr_*.txt), split into
train (most files), calibration and held-out evaluation text. Writes a Hugging Face folder with a
byte-level BPE tokenizer.

    python3 benchmarks/awq_make_model.py OUT_DIR [--minutes 15]
"""

from __future__ import annotations

import argparse
import glob
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt"))
    texts = {Path(f).name: Path(f).read_text(errors="replace") for f in files}
    eval_names = [n for n in texts if n.startswith("usr_4")]            # usr_40..usr_45: held out
    calib_names = [n for n in texts if n.startswith("usr_3")]           # usr_30..usr_32: calibration
    train_text = "\n".join(t for n, t in texts.items() if n not in eval_names + calib_names)
    (out / "calibration.txt").write_text("\n".join(texts[n] for n in calib_names) + "\n" +
                                         "\n".join(texts[n] for n in ("change.txt", "various.txt") if n in texts))
    (out / "eval.txt").write_text("\n".join(texts[n] for n in eval_names))

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([train_text], trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out)

    cfg = LlamaConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
                      vocab_size=len(fast), max_position_embeddings=1024, bos_token_id=0, eos_token_id=1,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    ids = torch.tensor(fast(train_text, add_special_tokens=False)["input_ids"])
    seq, batch = 128, 8
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01, betas=(0.9, 0.95))
    t0, step = time.time(), 0
    rng = random.Random(0)
    budget = args.minutes * 60
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        lr = 2e-3 * min(1.0, (step + 1) / 30) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = [rng.randrange(0, len(ids) - seq - 1) for _ in range(batch)]
        x = torch.stack([ids[s:s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
        step += 1
    model.save_pretrained(out)
    print(f"saved {out} after {step} steps, last loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
