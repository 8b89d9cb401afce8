"""Greedy chat with a Hugging Face model through transformers, batched: the reference answers of the demo
model's task score in the tests and the demo model's training script (benchmarks/demo_model)."""

from __future__ import annotations

from pathlib import Path

from engine.core.resources import DEMO_DIR


class TransformersChat:
    """Greedy chat with a Hugging Face folder (or an already loaded model) through transformers.

    Call it with one conversation, or use :meth:`batch` to answer many at once (left-padded).
    torch and transformers are imported only when one is made.
    """

    def __init__(self, model_dir: str | Path = DEMO_DIR, max_new_tokens: int = 32, model=None, tokenizer=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
        self.model = model or AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.max_new_tokens = max_new_tokens

    def __call__(self, messages: list[dict]) -> str:
        return self.batch([messages])[0]

    def batch(self, conversations: list[list[dict]], batch_size: int = 128) -> list[str]:
        import torch

        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        side, tok.padding_side = tok.padding_side, "left"
        was_training = model.training
        model.eval()
        replies: list[str] = []
        try:
            for i in range(0, len(conversations), batch_size):
                prompts = [
                    tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                    for c in conversations[i:i + batch_size]
                ]
                enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                with torch.no_grad(), torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                ):
                    out = model.generate(
                        **enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    )
                new = out[:, enc["input_ids"].shape[1]:]
                replies += [tok.decode(row, skip_special_tokens=True).strip() for row in new]
        finally:
            tok.padding_side = side
            model.train(was_training)
        return replies
