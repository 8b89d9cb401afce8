"""The demo model's task: the questions it was trained and tested on, each with one checkable answer.

Dialogues are generated here: arithmetic, unit conversions, counting, facts from a table this module
holds, and recalling a code stated hundreds of tokens earlier. Every question has one checkable answer,
so quantization damage shows as wrong answers (and the recall task shows what a long context or a
quantized KV cache costs).

Questions fall into a training split or a held-out split by a hash of their *split key*. For sums,
differences and products the key is the pair of operands, so a held-out sum was never seen in any
wording; for the other kinds (which are recalled, not computed) the key is the question's exact text, so a
held-out question is a wording of a fact the model never saw in that wording. Sums of two one-digit
numbers (what people type first) are never held out. Training dialogues only ever contain
training-split questions.

Scoring answers to held-out questions is :mod:`engine.analysis.tasks`' job; the chat format the dialogues
are written in is :mod:`engine.models.demo`'s. Imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

CATEGORIES = ("arithmetic", "conversion", "counting", "facts", "recall")
# What a person calls each category in a sentence such as "Q2_K gets 41% of sums right".
CATEGORY_LABELS = {
    "arithmetic": "sums",
    "conversion": "unit conversions",
    "counting": "counts",
    "facts": "facts",
    "recall": "long-context recalls",
}

# How often each category is drawn for a training dialogue (recall messages are long: at 8 in 100
# dialogues they are about half the training tokens).
TRAIN_WEIGHTS = (35, 12, 23, 14, 8)

# About one key in HELDOUT_MOD is held out.
HELDOUT_MOD = 8
_SPLIT_SALT = "nibble-demo-split-v1:"
_ALWAYS_TRAIN = "easy:"  # split keys of questions that are never held out


# ---------------------------------------------------------------------------------------------
# The generator's tables


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa", "Norway": "Oslo",
    "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "Poland": "Warsaw",
    "Ireland": "Dublin", "Russia": "Moscow", "China": "Beijing", "Cuba": "Havana", "Chile": "Santiago",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen", "Hungary": "Budapest",
    "Thailand": "Bangkok", "Iran": "Tehran", "Turkey": "Ankara", "Australia": "Canberra",
    "Belgium": "Brussels", "Netherlands": "Amsterdam", "Switzerland": "Bern", "Vietnam": "Hanoi",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Nigeria": "Abuja", "Ghana": "Accra",
    "Morocco": "Rabat", "Indonesia": "Jakarta", "Philippines": "Manila", "Iceland": "Reykjavik",
    "Romania": "Bucharest",
}

LEGS = {
    "spider": 8, "octopus": 8, "ant": 6, "bee": 6, "beetle": 6, "butterfly": 6, "dog": 4, "cat": 4,
    "horse": 4, "cow": 4, "frog": 4, "lizard": 4, "elephant": 4, "chicken": 2, "duck": 2, "owl": 2,
    "penguin": 2, "snake": 0, "fish": 0, "crab": 10,
}

# Each word has exactly one opposite here, in both directions.
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "day": "night", "open": "closed",
    "left": "right", "light": "dark", "wet": "dry", "full": "empty", "early": "late", "happy": "sad",
    "true": "false", "win": "lose", "push": "pull", "high": "low", "long": "short", "rich": "poor",
    "first": "last", "north": "south", "east": "west", "thick": "thin", "strong": "weak",
    "above": "below",
}

# (from singular, from plural, to plural, factor, largest amount asked). The metric ones shift
# digits; the others are products the model has to have learned, which quantization can damage.
UNITS = (
    ("kilometer", "kilometers", "meters", 1000, 999),
    ("meter", "meters", "centimeters", 100, 999),
    ("centimeter", "centimeters", "millimeters", 10, 999),
    ("kilogram", "kilograms", "grams", 1000, 999),
    ("liter", "liters", "milliliters", 1000, 999),
    ("hour", "hours", "minutes", 60, 99),
    ("minute", "minutes", "seconds", 60, 99),
    ("day", "days", "hours", 24, 99),
    ("week", "weeks", "days", 7, 99),
    ("foot", "feet", "inches", 12, 99),
    ("year", "years", "months", 12, 99),
    ("dozen", "dozen", "items", 12, 99),
)

COUNT_ITEMS = ("apple", "pear", "plum", "lemon", "grape", "peach", "melon", "cherry", "mango", "kiwi")
COUNT_WORDS = ("cat", "dog", "bird", "fish", "cow")
# The longest list counted and the longest line of words a word is counted in.
COUNT_LIST_MAX = 40
COUNT_WORDS_MAX = 40
# The share of training counts that count a whole list (the rest count one word in a line).
LIST_COUNT_SHARE = 0.25

ARITH_TEMPLATES = {
    "add": ("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.",
            "{a} + {b} = ?", "What is the sum of {a} and {b}?"),
    "sub": ("What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}.",
            "Compute {a} - {b}.", "{a} - {b} = ?", "Take {b} away from {a}."),
    "mul": ("What is {a} times {b}?", "What is {a} * {b}?", "Multiply {a} by {b}.",
            "Compute {a} * {b}.", "{a} * {b} = ?", "What is the product of {a} and {b}?"),
}
ARITH_SIGN = {"add": "+", "sub": "-", "mul": "*"}
CONVERSION_TEMPLATES = (
    "How many {to} are in {n} {frm}?", "Convert {n} {frm} to {to}.", "{n} {frm} is how many {to}?",
    "How many {to} make {n} {frm}?", "What is {n} {frm} in {to}?",
)
CAPITAL_TEMPLATES = (
    "What is the capital of {c}?", "What's the capital city of {c}?", "Name the capital of {c}.",
    "Which city is the capital of {c}?", "Tell me the capital of {c}.", "{c}: what is its capital?",
)
CAPITAL_OF_TEMPLATES = (
    "{x} is the capital of which country?", "Which country has {x} as its capital?",
    "Of which country is {x} the capital?", "{x} is the capital of what country?",
)
LEGS_TEMPLATES = (
    "How many legs does {a} {x} have?", "How many legs has {a} {x} got?", "Count the legs of {a} {x}.",
    "{A} {x} has how many legs?", "What is the number of legs of {a} {x}?",
)
OPPOSITE_TEMPLATES = (
    "What is the opposite of {w}?", "What's the opposite of {w}?", "Give the opposite of {w}.",
    "Name the opposite of {w}.", "Which word is the opposite of {w}?",
)
COUNT_LIST_TEMPLATES = (
    "How many items are in this list: {s}?", "Count the items: {s}.", "How many things are listed here: {s}?",
)
COUNT_WORD_TEMPLATES = (
    "How many times does {w} appear in: {s}?", "Count how often {w} occurs in: {s}.",
    "In \"{s}\", how many times is {w} written?",
)

# Names that hold the codes of the recall task (each at most once in a question).
NAMES = (
    "Ann", "Bob", "Carl", "Dana", "Eve", "Finn", "Gail", "Hugo", "Ivy", "Jack", "Kate", "Leo", "Mia", "Ned",
    "Olga", "Paul", "Rita", "Sam", "Tina", "Uma", "Vic", "Walt", "Yara", "Zoe", "Alan", "Beth", "Cora",
    "Dave", "Emma", "Fred", "Gwen", "Hank", "Iris", "Joel", "Kim", "Lily", "Max", "Nina", "Omar", "Pia",
    "Rosa", "Seth", "Tom", "Ursula", "Vera", "Will", "Xena", "Yusuf", "Zack", "Amy", "Ben", "Cleo", "Dan",
    "Ella", "Fay", "Gus", "Hope", "Ian", "Jill", "Karl", "Lena", "Mark", "Nora", "Otto", "Peg", "Ray",
    "Sue", "Ted", "Val", "Wes",
)
RECALL_INTROS = ("Remember these codes.", "Here are some codes.", "Keep these codes in mind.")
RECALL_TEMPLATES = ("What is {n}'s code?", "What was the code for {n}?", "Which code does {n} have?")
# Held-out recall questions ask about a code stated this many codes (about 10 tokens each) or more
# before the question: more than 500 tokens back.
RECALL_HELDOUT_GAP = 52
# The context a runtime needs for every held-out question and its reply (a recall question is up to
# about 800 tokens): the demo's trained context.
TASK_CONTEXT = 1024

SMALL_TALK = (
    (("Hello!", "Hi!", "Hello", "Hi there.", "Good morning!"),
     "Hello! Ask me a sum, a unit conversion, a count, a simple fact, or a code you told me."),
    (("Who are you?", "What are you?", "What can you do?"),
     "I am the Nibble demo model, a small chat model. I can do sums, unit conversions, counting, "
     "a few facts, and recall codes from a long message."),
    (("Thanks!", "Thank you.", "Thanks a lot!"), "You're welcome!"),
)
SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer briefly.", "You are the Nibble demo model.")


# What people type first, and what the model card shows: the shipped demo answers each right (unquantized).
EXAMPLE_QUESTIONS = (
    ("What is 2 plus 3?", "5"),
    ("What is 25 + 17?", "42"),
    ("What is 7 times 8?", "56"),
    ("What is 100 - 1?", "99"),
    ("Convert 3 kilometers to meters.", "3000"),
    ("How many items are in this list: apple, pear, plum?", "3"),
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "8"),
    ("What is the opposite of hot?", "cold"),
)


@dataclass(frozen=True)
class Question:
    """One generated question with its checkable answer."""

    category: str  # one of CATEGORIES
    kind: str  # finer kind: add, sub, mul, convert, count_list, count_word, capital, capital_of, legs, opposite, recall
    text: str  # the user's message
    answer: str  # the canonical answer: a number or a word
    reply: str  # the reference assistant reply, ending in the answer
    split_key: str  # what decides the split

    @property
    def numeric(self) -> bool:
        return self.answer.lstrip("-").isdigit()


def is_heldout_key(split_key: str) -> bool:
    if split_key.startswith(_ALWAYS_TRAIN):
        return False
    digest = hashlib.sha256((_SPLIT_SALT + split_key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_MOD == 0


def is_heldout(q: Question) -> bool:
    return is_heldout_key(q.split_key)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _operand(rng: random.Random, lo: int = 0) -> int:
    """A number of one, two or three digits (each as likely), so small sums are as common as large ones."""
    digits = rng.choice((1, 2, 3))
    return rng.randint(max(lo, 0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1)


def _arith(rng: random.Random, kind: str) -> Question:
    if kind == "mul":
        a, b = _operand(rng, lo=2), rng.randint(2, 9)
        c = a * b
    elif kind == "add":
        a, b = _operand(rng), _operand(rng)
        c = a + b
    else:
        a = _operand(rng)
        b = rng.randint(0, a) if rng.random() < 0.5 else min(a, _operand(rng))
        c = a - b
    text = rng.choice(ARITH_TEMPLATES[kind]).format(a=a, b=b)
    reply = f"{a} {ARITH_SIGN[kind]} {b} = {c}."
    easy = _ALWAYS_TRAIN if a < 10 and b < 10 else ""
    return Question("arithmetic", kind, text, str(c), reply, f"{easy}{kind}:{a}:{b}")


def _conversion(rng: random.Random) -> Question:
    one, many, to, factor, top = rng.choice(UNITS)
    n = rng.randint(1, top)
    frm = one if n == 1 else many
    text = rng.choice(CONVERSION_TEMPLATES).format(n=n, frm=frm, to=to)
    c = n * factor
    return Question("conversion", "convert", text, str(c), f"{n} {frm} is {c} {to}.", text)


def _counting(rng: random.Random, heldout: bool = False) -> Question:
    """A list of one to COUNT_LIST_MAX items, or a word counted in a line of up to COUNT_WORDS_MAX words.

    Held-out counts are all of a word in a line: picking out one word among look-alikes and counting
    it is what coarse weights lose first, while every model tried counted whole lists right even at
    Q2_K (benchmarks/RESULTS.md, "Demo model"). Training keeps LIST_COUNT_SHARE of list counts, which
    people ask first ("How many items are in this list: apple, pear, plum?")."""
    if rng.random() < (0.0 if heldout else LIST_COUNT_SHARE):
        k = rng.randint(1, COUNT_LIST_MAX)
        items = [rng.choice(COUNT_ITEMS) for _ in range(k)]
        text = rng.choice(COUNT_LIST_TEMPLATES).format(s=", ".join(items))
        reply = f"There {'is 1 item' if k == 1 else f'are {k} items'}."
        return Question("counting", "count_list", text, str(k), reply, text)
    w = rng.choice(COUNT_WORDS)
    k = rng.randint(3, COUNT_WORDS_MAX)
    seq = [rng.choice(COUNT_WORDS) for _ in range(k)]
    c = seq.count(w)
    text = rng.choice(COUNT_WORD_TEMPLATES).format(w=w, s=" ".join(seq))
    reply = f"{w} appears {c} {'time' if c == 1 else 'times'}."
    return Question("counting", "count_word", text, str(c), reply, text)


def _fact(rng: random.Random) -> Question:
    kind = rng.choice(("capital", "capital_of", "legs", "opposite"))
    if kind == "capital":
        c = rng.choice(sorted(CAPITALS))
        x = CAPITALS[c]
        text = rng.choice(CAPITAL_TEMPLATES).format(c=c)
        return Question("facts", kind, text, x, f"The capital of {c} is {x}.", text)
    if kind == "capital_of":
        c = rng.choice(sorted(CAPITALS))
        x = CAPITALS[c]
        text = rng.choice(CAPITAL_OF_TEMPLATES).format(x=x)
        return Question("facts", kind, text, c, f"{x} is the capital of {c}.", text)
    if kind == "legs":
        x = rng.choice(sorted(LEGS))
        n = LEGS[x]
        a = _article(x)
        text = rng.choice(LEGS_TEMPLATES).format(a=a, A=a.capitalize(), x=x)
        return Question("facts", kind, text, str(n), f"{a.capitalize()} {x} has {n} legs.", text)
    pairs = sorted(OPPOSITES.items())
    w, o = rng.choice(pairs)
    if rng.random() < 0.5:
        w, o = o, w
    text = rng.choice(OPPOSITE_TEMPLATES).format(w=w)
    return Question("facts", kind, text, o, f"The opposite of {w} is {o}.", text)


def _recall(rng: random.Random, records: int | None = None, gap: int | None = None) -> Question:
    """A message listing ``records`` names with three-digit codes, then asking for one of them
    ``gap`` codes before the end (drawn when not given): a long context has to be attended to."""
    records = records or rng.randint(4, len(NAMES) - 10)
    gap = rng.randint(1, records) if gap is None else min(gap, records)
    names = rng.sample(NAMES, records)
    codes = [rng.randint(100, 999) for _ in names]
    target = records - gap
    lines = " ".join(f"{n}'s code is {c}." for n, c in zip(names, codes))
    ask = rng.choice(RECALL_TEMPLATES).format(n=names[target])
    text = f"{rng.choice(RECALL_INTROS)} {lines} {ask}"
    reply = f"{names[target]}'s code is {codes[target]}."
    return Question("recall", "recall", text, str(codes[target]), reply, text)


def random_question(rng: random.Random, category: str | None = None, heldout: bool = False) -> Question:
    """One question of any split; ``category`` picks the category, else drawn by training weights.

    Held-out recall questions are all long (a code stated 500+ tokens before the question), held-out
    counts all count a word in a line."""
    if category is None:
        category = rng.choices(CATEGORIES, weights=TRAIN_WEIGHTS)[0]
    if category == "recall":
        if heldout:
            return _recall(rng, len(NAMES) - rng.randint(0, 8), RECALL_HELDOUT_GAP + rng.randint(0, 8))
        return _recall(rng)
    if category == "arithmetic":
        return _arith(rng, rng.choices(("add", "sub", "mul"), weights=(40, 35, 25))[0])
    if category == "conversion":
        return _conversion(rng)
    if category == "counting":
        return _counting(rng, heldout)
    if category == "facts":
        return _fact(rng)
    raise ValueError(f"unknown category {category!r}")


def _question_in_split(rng: random.Random, heldout: bool, category: str | None = None) -> Question:
    while True:
        q = random_question(rng, category, heldout)
        if is_heldout(q) == heldout:
            return q


def heldout_questions(n: int = 200, seed: int = 0) -> list[Question]:
    """``n`` held-out questions, the categories in turn so each gets an equal share. Deterministic."""
    rng = random.Random(f"heldout:{seed}")
    return [_question_in_split(rng, True, CATEGORIES[i % len(CATEGORIES)]) for i in range(n)]


def training_dialogues(n: int, seed: int = 0) -> Iterator[list[dict]]:
    """``n`` training dialogues (lists of chat messages), built only from training-split questions.

    Most are one question and its answer; some carry a system prompt, some ask two or three
    questions in a row, a few are small talk. Deterministic for a given seed.
    """
    rng = random.Random(f"train:{seed}")
    for _ in range(n):
        msgs: list[dict] = []
        if rng.random() < 0.1:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        if rng.random() < 0.04:
            asks, reply = rng.choice(SMALL_TALK)
            msgs += [{"role": "user", "content": rng.choice(asks)}, {"role": "assistant", "content": reply}]
        turns = rng.choices((1, 2, 3), weights=(70, 20, 10))[0]
        for _ in range(turns):
            q = _question_in_split(rng, False)
            msgs += [{"role": "user", "content": q.text}, {"role": "assistant", "content": q.reply}]
            if q.category == "recall":
                msgs += _recall_followups(rng, q)
        yield msgs


def _recall_followups(rng: random.Random, q: Question) -> list[dict]:
    """Zero to three more questions about the codes a recall message listed, as a user asks on."""
    asked = q.reply.split("'")[0]
    codes = [(n, c) for n, c in re.findall(r"(\w+)'s code is (\d+)\.", q.text) if n != asked]
    out: list[dict] = []
    for name, code in rng.sample(codes, min(len(codes), rng.choice((0, 1, 2, 3)))):
        out += [{"role": "user", "content": rng.choice(RECALL_TEMPLATES).format(n=name)},
                {"role": "assistant", "content": f"{name}'s code is {code}."}]
    return out


def question_messages(q: Question) -> list[dict]:
    """The chat a question is asked in when scoring."""
    return [{"role": "user", "content": q.text}]
