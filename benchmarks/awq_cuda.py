"""On a CUDA GPU: (1) train the small Llama the CPU AWQ benchmark uses, (2) AWQ a Llama-3.2-1B-shaped model.

Run from a folder holding a copy of ``engine/``, the tokenizer files written by
``benchmarks/awq_make_model.py`` (byte-level BPE, 2048 tokens, trained on the Vim docs), ``train_ids.pt``
(the Vim docs except usr_3*/usr_4*, tokenized, int16) and ``calibration.txt`` (usr_3*, change.txt,
various.txt and resources/calibration.txt):

    OUT=/some/dir python3 awq_cuda.py 80     # 80 s of training

Writes OUT/small (the trained model, bf16) and OUT/report.json (1B AWQ time and peak VRAM).
"""
import json, math, os, sys, time
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = Path(os.environ["OUT"])
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

tok = AutoTokenizer.from_pretrained(HERE)
report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}

# ---- 1. train
t0 = time.time()
ids = torch.load(HERE / "train_ids.pt").long().cuda()
cfg = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=1024, bos_token_id=0,
                  eos_token_id=1, tie_word_embeddings=False)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(cfg).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
seq, batch, budget = 256, 64, float(sys.argv[1]) if len(sys.argv) > 1 else 90
g = torch.Generator(device="cuda").manual_seed(0)
step = 0
while time.time() - t0 < budget:
    frac = (time.time() - t0) / budget
    lr = 3e-3 * min(1, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
    for pg in opt.param_groups: pg["lr"] = lr
    st = torch.randint(0, len(ids) - seq - 1, (batch,), device="cuda", generator=g)
    x = ids[st[:, None] + torch.arange(seq, device="cuda")]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=x, labels=x).loss
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    step += 1
report["train"] = {"steps": step, "loss": loss.item(), "seconds": time.time() - t0,
                   "params": sum(p.numel() for p in model.parameters())}
print(report["train"], flush=True)
(OUT / "small").mkdir()
model.to(torch.bfloat16).cpu().save_pretrained(OUT / "small")
tok.save_pretrained(OUT / "small")
del model, opt

# ---- 2. 1B-shaped Llama (Llama-3.2-1B config), random weights, AWQ on cuda
big = Path("/tmp/llama1b")
cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                  rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
                  rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3"})
t1 = time.time()
with torch.device("cuda"):
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
m.save_pretrained(big); tok.save_pretrained(big)
del m; torch.cuda.empty_cache()
report["make_1b_seconds"] = time.time() - t1
from engine.awq import quantize_awq, load_awq
from engine.core.progress import TextReporter
torch.cuda.reset_peak_memory_stats()
res = quantize_awq(big, "/tmp/llama1b-awq", calibration=HERE / "calibration.txt", samples=128, seqlen=512,
                   device="cuda", reporter=TextReporter(sys.stdout))
report["awq_1b"] = {"seconds": res.seconds, "peak_vram_gib": res.peak_memory_bytes / 2**30,
                    "out_bytes": res.file_bytes, "files": res.files}
print(report["awq_1b"], flush=True)
q = load_awq("/tmp/llama1b-awq", "cuda")
x = tok("The quick brown fox", return_tensors="pt").input_ids.cuda()
with torch.no_grad():
    ref = AutoModelForCausalLM.from_pretrained(big, dtype=torch.float16).cuda()(x).logits.float()
    out = q(x).logits.float()
lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(out, -1)
report["awq_1b"]["kld_vs_fp16_short_prompt"] = (lp.exp() * (lp - lq)).sum(-1).mean().item()
report["awq_1b"]["same_top1"] = (ref.argmax(-1) == out.argmax(-1)).float().mean().item()
(OUT / "report.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
