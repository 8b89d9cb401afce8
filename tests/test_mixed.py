"""The best file for a size: per-tensor types from measured sensitivity (engine.pipelines.mixed).

One tiny random Llama is measured once (profile cached under a per-module NIBBLE_HOME); every check after
that reuses it. The written file must load in llama.cpp, carry exactly the recipe's types, and be exactly
the estimated size, within the budget.
"""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest

from eval_models import EVAL_TEXT, build_tiny_llama

ROOT = EVAL_TEXT.parent.parent


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("nibble-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("NIBBLE_HOME", str(h))
    yield h
    mp.undo()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("mix-model") / "model")


@pytest.fixture(scope="module")
def plan(model):
    from engine.estimate import load_plan

    return load_plan(model)


@pytest.fixture(scope="module")
def mixed(model, plan, home, tmp_path_factory):
    """A mix at the size of this model's Q4_K_M, written once."""
    from engine.estimate import estimate
    from engine.pipelines.mixed import quantize_mixed

    budget = estimate(plan, "Q4_K_M").file_bytes
    out = tmp_path_factory.mktemp("mix-out") / "tiny-mix.gguf"
    res = quantize_mixed(model, out, target_size=budget, calibration=EVAL_TEXT)
    return res, budget


def test_size_units():
    from engine.core.errors import NibbleError
    from engine.core.units import parse_size

    assert parse_size("4.2GB") == 4_200_000_000
    assert parse_size("3900MiB") == 3900 * 2**20
    assert parse_size("123456") == 123456
    assert parse_size("1.5 GiB") == 3 * 2**29
    with pytest.raises(NibbleError, match="not a size"):
        parse_size("4.2 parsecs")


def test_search_keeps_to_the_budget_and_spends_it_well(plan):
    from engine.estimate.mix import candidate_map, mix_layout, search, size_range

    # a synthetic profile: error halves per extra bit, larger for the first layer
    rng = np.random.default_rng(0)
    bits = {"Q2_K": 2.6, "Q3_K": 3.4, "IQ3_S": 3.4, "IQ4_XS": 4.25, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.6,
            "Q8_0": 8.5, "F16": 16, "Q4_0": 4.5, "IQ4_NL": 4.5, "Q5_0": 5.5}
    kld = {n: {t: (3.0 if ".0." in n else 1.0) * rng.uniform(0.8, 1.2) * 2.0 ** -bits[t] for t in ts}
           for n, ts in candidate_map(plan).items()}
    lo, hi = size_range(plan)
    last = None
    for frac in (0.0, 0.2, 0.5, 0.9, 1.0):
        budget = int(lo + frac * (hi - lo))
        mix = search(plan, kld, budget)
        assert mix.file_bytes <= budget
        assert mix.file_bytes == mix_layout(plan, mix.tensor_types).file_bytes
        assert mix.predicted_kld == pytest.approx(sum(kld[n][t] for n, t in mix.tensor_types.items()))
        if last is not None:
            assert mix.predicted_kld <= last
        last = mix.predicted_kld
        # nothing left over that a single upgrade could use
        slack = budget - mix.file_bytes
        assert slack < max(mix_layout(plan, {**mix.tensor_types, n: "F16"}).file_bytes - mix.file_bytes
                           for n in mix.tensor_types) or frac == 1.0


def test_bad_budgets_name_the_range(model, home, tmp_path):
    from engine.core.errors import NibbleError
    from engine.pipelines.mixed import quantize_mixed

    out = tmp_path / "x.gguf"
    for size in ("1KB", "100GB"):
        with pytest.raises(NibbleError, match=r"outside what a mix of this model can be: .* to .*F16"):
            quantize_mixed(model, out, target_size=size)
    with pytest.raises(NibbleError, match="calibration text"):
        quantize_mixed(model, out, target_size="1MB", imatrix=tmp_path / "some.imatrix")
    assert not list(tmp_path.iterdir())  # nothing written


def test_mixed_file_loads_with_the_recipe_types_at_the_estimated_size(mixed, plan):
    import llama_cpp

    from engine.estimate.mix import mix_layout
    from engine.gguf.mixed import load_recipe

    res, budget = mixed
    size = res.output.stat().st_size
    rec = load_recipe(res.recipe_path)
    assert size == mix_layout(plan, rec.tensor_types).file_bytes == rec.file_bytes
    assert size <= budget
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(res.output)).tensors}
    assert {n: types[n] for n in rec.tensor_types} == rec.tensor_types
    assert len(set(rec.tensor_types.values())) > 1  # a real mix
    llm = llama_cpp.Llama(str(res.output), n_ctx=64, verbose=False)
    assert len(llm.tokenize(b"hello world")) > 0
    llm.close()


def test_profile_error_matches_an_independent_roundtrip(mixed, model, home):
    """The Q8_0 error of one tensor, recomputed with gguf-py's own Q8_0 (numpy) and the saved weights."""
    from engine.gguf.mixed import CANDIDATES
    from engine.gguf.sensitivity import measure_sensitivity

    profiles = list((home / "mix-profiles").iterdir())
    assert len(profiles) == 1
    kld = json.loads((profiles[0] / "profile.json").read_text())["kld"]
    name = "blk.1.ffn_down.weight"
    assert set(kld[name]) == set(CANDIDATES)
    pairs = measure_sensitivity(model, EVAL_TEXT.read_text())[name]
    from engine.gguf.convert import convert_to_gguf

    f32 = convert_to_gguf(model, home / "ref.gguf")
    t = next(t for t in gguf.GGUFReader(str(f32)).tensors if t.name == name)
    w = np.asarray(t.data, dtype=np.float32).reshape(-1, int(t.shape[0]))
    back = gguf.quants.dequantize(gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                                  gguf.GGMLQuantizationType.Q8_0)
    d2 = (back.astype(np.float64) - w) ** 2
    want = 0.5 * sum(float(r @ d2 @ c) for r, c in pairs)
    assert kld[name]["Q8_0"] == pytest.approx(want, rel=0.02)
    assert kld[name]["Q2_K"] > kld[name]["Q4_K"] > kld[name]["Q8_0"] > kld[name]["F16"] >= 0  # F32 source


def test_recipe_reused_on_a_fine_tune(mixed, tmp_path):
    from engine.core.errors import NibbleError
    from engine.gguf.mixed import load_recipe
    from engine.pipelines.mixed import quantize_mixed

    res, _ = mixed
    tuned = build_tiny_llama(tmp_path / "tuned", seed=1)  # same shapes, other weights
    out = tmp_path / "tuned.gguf"
    again = quantize_mixed(tuned, out, recipe=res.recipe_path, calibration=EVAL_TEXT)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    rec = load_recipe(res.recipe_path)
    assert {n: types[n] for n in rec.tensor_types} == rec.tensor_types
    assert again.file_bytes == out.stat().st_size == rec.file_bytes
    other = build_tiny_llama(tmp_path / "other", seed=2, layers=3)
    with pytest.raises(NibbleError, match="made for another model"):
        quantize_mixed(other, tmp_path / "o.gguf", recipe=res.recipe_path, calibration=EVAL_TEXT)


def test_estimate_cli_lists_each_tensor_and_matches_the_file(mixed, model, home):
    import os

    res, budget = mixed
    env = {**os.environ, "NIBBLE_HOME": str(home)}
    p = subprocess.run([sys.executable, "-m", "engine", "estimate", str(model), "--target-size", str(budget),
                        "--calibration", str(EVAL_TEXT), "--json"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)["mix"]
    assert d["file_bytes"] == res.output.stat().st_size
    rec = json.loads(res.recipe_path.read_text())
    assert {n: d["tensor_types"][n] for n in rec["tensor_types"]} == rec["tensor_types"]
    assert any(u["type"] == "Q4_K_M" for u in d["uniform"])
    p = subprocess.run([sys.executable, "-m", "engine", "quantize", str(model), "--out", str(home / "y.gguf"),
                        "--target-size", "1KB"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "F16" in p.stderr


def test_check_measures_the_mix_against_the_uniform_type_of_its_budget(mixed, model, plan, home):
    """The done page's figures: the uniform type is the largest that fits the budget (every candidate sized
    by the estimate, which tests/test_estimate.py holds to llama.cpp), quantized with the profile's
    importance matrix; each side's KLD equals an evaluation of a file made apart; nothing is left behind."""
    from engine.analysis.evaluate import evaluate
    from engine.estimate import estimate
    from engine.gguf.mixed import load_profile
    from engine.gguf.quantize import quantize
    from engine.pipelines.mix_check import UNIFORM_TYPES, check_mix

    res, budget = mixed
    sizes = {t: estimate(plan, t).file_bytes for t in UNIFORM_TYPES}
    fitting = [t for t in UNIFORM_TYPES if sizes[t] <= budget]
    want_type = max(fitting, key=lambda t: sizes[t])
    before = sorted(p.name for p in res.output.parent.iterdir())
    check = check_mix(model, res.output, calibration=EVAL_TEXT, max_chunks=4)
    assert sorted(p.name for p in res.output.parent.iterdir()) == before
    assert (check.uniform_type, check.uniform_bytes, check.mix_bytes) == (want_type, sizes[want_type],
                                                                         res.output.stat().st_size)
    profile = load_profile(next((home / "mix-profiles").iterdir()))
    apart = home / f"apart-{want_type}.gguf"
    quantize(model, want_type, apart, imatrix=profile.imatrix)
    uniform = evaluate(model, apart, max_chunks=4)
    mix = evaluate(model, res.output, max_chunks=4)
    assert check.uniform_kld == pytest.approx(uniform.kld_mean, rel=1e-6)
    assert check.mix_kld == pytest.approx(mix.kld_mean, rel=1e-6)
    assert check.mix_top1 == pytest.approx(mix.top1_agreement) and check.tokens == mix.tokens
    assert check.ratio == pytest.approx(mix.kld_mean / uniform.kld_mean)


@pytest.mark.parametrize("gpu_layers", [0, 99])
def test_fit_this_machine_brackets_the_uniform_types_the_estimate_says_fit(plan, gpu_layers):
    """"Fit this machine": uniform types the estimate calls "fits" are at most the budget, those it does not
    are above it (free memory set between two types' needs, so the bracket is tight)."""
    from engine.core.devices import Machine
    from engine.estimate import estimate
    from engine.estimate.mix import fitting_budget, size_range

    order = ["Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    ests = {t: estimate(plan, t, ctx=512, gpu_layers=gpu_layers) for t in order}
    ram = {t: e.run.ram_needed_bytes for t, e in ests.items()}
    vram = {t: e.run.vram_bytes for t, e in ests.items()}
    # free memory so that with the margin (fits = at most 80 % of free) Q5_K_M fits and Q6_K does not
    free_ram = int((ram["Q5_K_M"] + ram["Q6_K"]) / 2 / 0.8) if not gpu_layers else 10**12
    free_vram = int((vram["Q5_K_M"] + vram["Q6_K"]) / 2 / 0.8) if gpu_layers else 0
    machine = Machine(free_ram, free_vram, 10**12, "/")
    budget = fitting_budget(plan, machine, ctx=512, gpu_layers=gpu_layers)
    for t in order:
        verdict = estimate(plan, t, ctx=512, gpu_layers=gpu_layers, machine=machine).fit.verdict
        assert (verdict == "fits") == (ests[t].file_bytes <= budget), (t, verdict, ests[t].file_bytes, budget)
    tiny = Machine(1, 1 if gpu_layers else 0, 10**12, "/")
    assert fitting_budget(plan, tiny, ctx=512, gpu_layers=gpu_layers) is None
    huge = Machine(10**13, 10**13 if gpu_layers else 0, 10**12, "/")
    assert fitting_budget(plan, huge, ctx=512, gpu_layers=gpu_layers) == size_range(plan)[1]


@pytest.mark.parametrize("ops", [
    (("permute", 2),), (("regroup", (0, 0, 2, 2, 2)),), (("pick", (2, (3, 1), (1, 0))),), (("slice", (0, 2, 6)),),
    (("rows", 5), ("add", 1.0)), (("transpose", 0),), (("slice", (1, 0, 3)),),
])
def test_row_weights_follow_the_converters_row_transforms(ops):
    """The sensitivity of each row lands on the row the converter moved it to: a matrix whose rows hold their
    own index, taken through the converter's own transforms, reads back the weights' order; transforms that
    move columns too give None (only averages line up)."""
    from types import SimpleNamespace

    from engine.gguf.sensitivity import _rows_as_converted
    from engine.models.families.tensors import materialise

    r = np.arange(8, dtype=np.float64) + 1
    w = np.repeat(r[:, None], 4, axis=1).astype(np.float32)
    t = SimpleNamespace(values=None, sources=["w"], ops=ops)
    moved = materialise(t, lambda _n: w)
    got = _rows_as_converted(r, t)
    if any(op in ("transpose",) or (op == "slice" and arg[0] != 0) for op, arg in ops):
        assert got is None
    else:
        want = moved[:, 0] - (1.0 if ("add", 1.0) in ops else 0.0)
        np.testing.assert_array_equal(got, want)
