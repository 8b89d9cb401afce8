"""The bundled demo model and its task: shape, tokenizer, generator, scorer, and real answers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.analysis import tasks
from engine.models import demo
from engine.models import demo_questions
from engine.core.errors import Cancelled
from engine.core.progress import Reporter
from transformers_chat import TransformersChat

ROOT = Path(__file__).resolve().parent.parent


def test_demo_name_is_recognised_and_folder_exists():
    assert demo.is_demo_name("demo") and demo.is_demo_name(" Demo ")
    assert not demo.is_demo_name("./demo-model") and not demo.is_demo_name(None)
    assert demo.DEMO_DIR == ROOT / "resources" / "demo"
    assert demo.demo_available()


def test_shipped_folder_is_a_small_llama_with_gqa_and_k_quant_friendly_shapes():
    from safetensors import safe_open

    cfg = json.loads((demo.DEMO_DIR / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] % 256 == 0 and cfg["intermediate_size"] % 256 == 0
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    with safe_open(str(demo.DEMO_DIR / "model.safetensors"), "pt") as f:
        names = list(f.keys())
        for name in names:
            t = f.get_slice(name)
            assert t.get_dtype() == "BF16", name
            shape = t.get_shape()
            if len(shape) == 2:  # every matrix row is a whole number of 256-value K-quant blocks
                assert shape[1] % 256 == 0, (name, shape)
    assert any("k_proj" in n for n in names)
    total = sum(p.stat().st_size for p in demo.DEMO_DIR.iterdir())
    assert total <= 20 * 1024 * 1024
    card = (demo.DEMO_DIR / "README.md").read_text()
    assert "license: mit" in card and "Held-out accuracy" in card


def test_tokenizer_is_byte_level_bpe_with_chat_template():
    from transformers import AutoTokenizer

    tj = json.loads((demo.DEMO_DIR / "tokenizer.json").read_text())
    assert tj["model"]["type"] == "BPE"
    tcfg = json.loads((demo.DEMO_DIR / "tokenizer_config.json").read_text())
    assert tcfg["chat_template"] == demo.CHAT_TEMPLATE
    assert tcfg["bos_token"] == demo.BOS_TOKEN and tcfg["eos_token"] == demo.IM_END

    tok = AutoTokenizer.from_pretrained(str(demo.DEMO_DIR))
    chat = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "12 + 30 = 42."},
        {"role": "user", "content": "What is the capital of Peru?"},
    ]
    text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert text == demo.render_chat(chat, add_generation_prompt=True)
    assert text.startswith("<|bos|><|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids(demo.IM_END)) == len(chat)
    # Numbers are spelled one digit a token, which is what lets a small model do sums.
    pieces = tok.convert_ids_to_tokens(tok("2024 + 365", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == list("2024365")


def test_generator_is_deterministic_and_seeded():
    assert list(demo_questions.training_dialogues(50, seed=3)) == list(demo_questions.training_dialogues(50, seed=3))
    assert list(demo_questions.training_dialogues(50, seed=3)) != list(demo_questions.training_dialogues(50, seed=4))
    assert demo_questions.heldout_questions(60, seed=1) == demo_questions.heldout_questions(60, seed=1)
    assert demo_questions.heldout_questions(200)[:40] == demo_questions.heldout_questions(40)
    counts = {c: sum(q.category == c for q in demo_questions.heldout_questions(200)) for c in demo_questions.CATEGORIES}
    assert counts == {c: 200 // len(demo_questions.CATEGORIES) for c in demo_questions.CATEGORIES}


def test_heldout_questions_never_appear_in_training_data():
    held = demo_questions.heldout_questions(400, seed=0) + demo_questions.heldout_questions(400, seed=9)
    assert all(demo_questions.is_heldout(q) for q in held)
    held_texts = {q.text for q in held}
    held_pairs = {q.split_key for q in held if q.kind in ("add", "sub", "mul")}
    assert len(held_pairs) > 50
    seen_texts, seen_pairs = set(), set()
    reply_re = re.compile(r"(\d+) ([-+*]) (\d+) = ")
    kinds = {"+": "add", "-": "sub", "*": "mul"}
    for dialogue in demo_questions.training_dialogues(30000, seed=0):
        for m in dialogue:
            if m["role"] == "user":
                seen_texts.add(m["content"])
            else:
                hit = reply_re.match(m["content"])
                if hit:
                    seen_pairs.add(f"{kinds[hit.group(2)]}:{hit.group(1)}:{hit.group(3)}")
    assert len(seen_pairs) > 3000
    assert not held_texts & seen_texts
    assert not held_pairs & seen_pairs


def _template_match(templates, text):
    """The fields of ``text`` if it is one of ``templates`` filled in ({s}: a line or list, {w}: one word)."""
    for t in templates:
        pattern = re.escape(t).replace(r"\{s\}", r"(?P<s>.+)").replace(r"\{w\}", r"(?P<w>\w+)")
        m = re.fullmatch(pattern, text)
        if m:
            return m
    return None


def test_heldout_counts_are_word_counts_and_training_keeps_list_counts():
    """The held-out counts are the kind quantization moves (one word among look-alikes, counted); training
    also counts whole lists, the counts people type first, about a quarter of the time."""
    counts = [q for q in demo_questions.heldout_questions(400) if q.category == "counting"]
    assert len(counts) == 80
    for q in counts:
        m = _template_match(demo_questions.COUNT_WORD_TEMPLATES, q.text)
        assert m, q.text
        assert int(q.answer) == m["s"].split().count(m["w"]), q.text
    asked = [m["content"] for d in demo_questions.training_dialogues(4000, seed=3) for m in d if m["role"] == "user"]
    lists = sum(bool(_template_match(demo_questions.COUNT_LIST_TEMPLATES, a)) for a in asked)
    words = sum(bool(_template_match(demo_questions.COUNT_WORD_TEMPLATES, a)) for a in asked)
    assert 0.18 < lists / (lists + words) < 0.32


def test_every_table_fact_has_a_training_wording():
    """A held-out fact question is a new wording of a fact the model could have learned."""
    def some_training(templates, **values):
        return any(not demo_questions.is_heldout_key(t.format(**values)) for t in templates)

    for country, city in demo_questions.CAPITALS.items():
        assert some_training(demo_questions.CAPITAL_TEMPLATES, c=country)
        assert some_training(demo_questions.CAPITAL_OF_TEMPLATES, x=city)
    for animal in demo_questions.LEGS:
        a = "an" if animal[0] in "aeiou" else "a"
        assert some_training(demo_questions.LEGS_TEMPLATES, a=a, A=a.capitalize(), x=animal)
    for w, o in demo_questions.OPPOSITES.items():
        assert some_training(demo_questions.OPPOSITE_TEMPLATES, w=w)
        assert some_training(demo_questions.OPPOSITE_TEMPLATES, w=o)


def test_calibration_text_is_written_anew_when_the_generator_changes(monkeypatch, tmp_path):
    """The demo's calibration dialogues are cached in the data folder; a Nibble whose generator writes other
    dialogues (a new demo) must not calibrate on the text an older one left there."""
    monkeypatch.setenv("NIBBLE_HOME", str(tmp_path))

    def fresh(n: int) -> str:
        return "".join(demo.render_chat(d) for d in demo_questions.training_dialogues(n, 11))

    first = demo.calibration_path(n=50, seed=11)
    assert first.read_text(encoding="utf-8") == fresh(50)
    try:
        monkeypatch.setattr(demo_questions, "COUNT_LIST_MAX", 12)  # a generator that counts shorter lists
        demo._generator_tag.cache_clear()
        second = demo.calibration_path(n=50, seed=11)
        assert second != first and second.read_text(encoding="utf-8") == fresh(50)
        assert first.read_text(encoding="utf-8") != fresh(50)
    finally:
        monkeypatch.undo()
        demo._generator_tag.cache_clear()
    assert demo.calibration_path(n=50, seed=11).name == first.name  # the current generator: the first name again


def test_scorer_gives_an_oracle_full_marks_and_a_wrong_answerer_none():
    questions = demo_questions.heldout_questions(80, seed=5)
    by_text = {q.text: q for q in questions}

    def oracle(messages):
        return by_text[messages[-1]["content"]].reply

    def terse(messages):  # only the answer, in another case and with a thousands separator
        q = by_text[messages[-1]["content"]]
        return f"{int(q.answer):,}" if q.numeric else q.answer.upper()

    def off_by_one(messages):
        q = by_text[messages[-1]["content"]]
        wrong = str(int(q.answer) + 1) if q.numeric else q.answer + "x"
        return q.reply.replace(q.answer, wrong)

    full = tasks.score_task(oracle, n=80, seed=5)
    assert full.overall == 1.0 and full.total == 80
    assert all(c.accuracy == 1.0 and c.total == 80 // len(demo_questions.CATEGORIES) for c in full.per_category.values())
    assert tasks.score_task(terse, n=80, seed=5).overall == 1.0
    none = tasks.score_task(off_by_one, n=80, seed=5)
    assert none.overall == 0.0 and none.correct == 0
    assert tasks.score_task(lambda m: "", n=8, seed=5).overall == 0.0
    d = full.to_dict()
    assert d["per_category"]["arithmetic"]["label"] == "sums" and d["overall"] == 1.0


def test_scorer_reports_progress_and_stops_when_cancelled():
    class Stop(Reporter):
        def __init__(self):
            self.seen = []

        def progress(self, done, total, message="", **extra):
            self.seen.append((done, total))

        def is_cancelled(self):
            return len(self.seen) >= 3

    rep = Stop()
    with pytest.raises(Cancelled):
        tasks.score_task(lambda m: "0", n=10, reporter=rep)
    assert rep.seen == [(1, 10), (2, 10), (3, 10)]


def test_shipped_model_answers_heldout_questions():
    """The real demo, unquantized, greedy on the CPU: most held-out answers are right."""
    chat = TransformersChat(demo.DEMO_DIR)
    questions = demo_questions.heldout_questions(20, seed=123)
    replies = chat.batch([demo_questions.question_messages(q) for q in questions])
    score = tasks.score_answers(questions, replies)
    assert score.overall >= 0.8, [(i.question.text, i.reply) for i in score.items if not i.correct]
    assert chat([{"role": "user", "content": "What is 25 + 17?"}]).endswith("42.")


def test_shipped_model_answers_what_people_type_first():
    """The card's examples ("What is 2 plus 3?" first), unquantized and greedy: each reply's last number, or
    for a word answer one of its words, is the answer."""
    chat = TransformersChat(demo.DEMO_DIR)
    replies = chat.batch([[{"role": "user", "content": q}] for q, _ in demo_questions.EXAMPLE_QUESTIONS])

    def gives(reply: str, want: str) -> bool:
        if want.isdigit():
            return re.findall(r"\d+", reply)[-1:] == [want]
        return want.lower() in re.findall(r"[a-z]+", reply.lower())

    wrong = [(q, r) for (q, want), r in zip(demo_questions.EXAMPLE_QUESTIONS, replies) if not gives(r, want)]
    assert not wrong, wrong
    assert replies[0].strip() == "2 + 3 = 5."


def _train_tiny(out: Path, *extra: str) -> None:
    """A few CPU steps of benchmarks/demo_model/train.py into ``out``."""
    args = ["--out", str(out), "--device", "cpu", "--steps", "2", "--dialogues", "3000",
            "--tokenizer-dialogues", "3000", "--vocab", "512", "--layers", "1", "--batch", "2",
            "--seq", "32", "--warmup", "1", "--eval-every", "0", "--eval-n", "4", *extra]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_model" / "train.py"), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.slow
def test_training_script_runs_on_cpu(tmp_path):
    """The recipe runs end to end without a GPU and writes a folder transformers can load."""
    out = tmp_path / "model"
    _train_tiny(out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "README.md"} <= names
    assert "chat_template.jinja" not in names
    report = json.loads((tmp_path / "train_report.json").read_text())
    assert report["steps"] == 2 and report["heldout"]["total"] == 4
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.num_key_value_heads == 2 and model.config.vocab_size == len(tok) == 512
    assert model.config.tie_word_embeddings


@pytest.mark.slow
def test_untied_training_gives_an_embedding_that_low_bit_types_quantize(tmp_path):
    """--untied writes separate input and output embeddings, and llama.cpp's Q3_K_M then stores the input
    embedding at 3 bits (Q3_K) and the output at Q6_K, where a tied one would be kept at Q6_K."""
    import gguf
    from safetensors import safe_open

    from engine.gguf.quantize import quantize

    out = tmp_path / "model"
    _train_tiny(out, "--untied")
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    assert "separate input and output embeddings" in " ".join((out / "README.md").read_text().split())
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" in f.keys()
        assert not f.get_tensor("lm_head.weight").equal(f.get_tensor("model.embed_tokens.weight"))
    quantize(out, "Q3_K_M", tmp_path / "q3.gguf")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "q3.gguf")).tensors}
    assert types["token_embd.weight"] == "Q3_K" and types["output.weight"] == "Q6_K"
