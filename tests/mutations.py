"""Changes to the figures Nibble's users read, each of which the test suite must catch.

Run by hand from the repository root (pytest does not collect this file)::

    python3 tests/mutations.py                 # every mutation
    python3 tests/mutations.py kld-reversed    # some, by name
    python3 tests/mutations.py --list          # names and what each one breaks
    python3 tests/mutations.py --baseline      # first check the selected tests pass on the unchanged tree
    python3 tests/mutations.py --keep-going NAME   # every test named for NAME runs: which of them catch it

The working tree is copied once to a temporary folder. For each mutation one file of the copy is changed
(a textual replacement that must match exactly once), the tests named for it run there with ``-x``, and the
file is put back. A mutation is *caught* when a test fails. The table at the end is the one kept in
tests/README.md; when a figure is added to Nibble, add its mutation here with the test that catches it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the change, as a reviewer would describe it
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


EVAL = "engine/analysis/evaluate.py"
KLD = "    kld = (p_ref_all * (lp_ref - lp_cand)).sum(axis=-1)\n"
PPL = "    ppl_ref, ppl_cand = math.exp(nll_ref), math.exp(nll_cand)\n"
FIGURES = "tests/test_figures.py"
SIZES = "tests/test_estimate.py::test_file_size_matches_quantized_file"
FAMILY = "engine/models/families/base.py"
GATE_UP = ('                raise NibbleError(f"{where}: tensor {hf_name} has no GGUF counterpart for {self.name}; "\n'
           '                                  "the checkpoint does not match its config")\n')

MUTATIONS = [
    Mutation("kld-reversed", "KL divergence computed the wrong way round, KL(candidate ‖ reference)", EVAL, KLD,
             "    kld = (np.exp(lp_cand) * (lp_cand - lp_ref)).sum(axis=-1)\n", (FIGURES,)),
    Mutation("kld-doubled", "KL divergence doubled", EVAL, KLD,
             "    kld = 2 * (p_ref_all * (lp_ref - lp_cand)).sum(axis=-1)\n", (FIGURES,)),
    Mutation("kld-p99-is-p90", "the '99th percentile' of KLD taken at 90", EVAL,
             "kld_p99=float(np.percentile(kld, 99.0))", "kld_p99=float(np.percentile(kld, 90.0))", (FIGURES,)),
    Mutation("ppl-in-bits", "perplexity as 2 ** NLL although NLL is in nats", EVAL, PPL,
             "    ppl_ref, ppl_cand = 2 ** nll_ref, 2 ** nll_cand\n", (FIGURES,)),
    Mutation("ppl-candidate-from-reference", "the candidate's perplexity from the reference's log-likelihood",
             EVAL, PPL, "    ppl_ref, ppl_cand = math.exp(nll_ref), math.exp(nll_ref)\n", (FIGURES,)),
    Mutation("top1-against-right-token", "top-token agreement counts the candidate's hits on the right token",
             EVAL, '"same_top": np.argmax(ref_logits, axis=-1) == np.argmax(cand_logits, axis=-1),',
             '"same_top": np.argmax(cand_logits, axis=-1) == targets,', (FIGURES,)),
    Mutation("eval-progress-from-zero", "eval progress counts windows from 0, never reaching the total", EVAL,
             'reporter.progress(i + 1, len(windows), f"window {i + 1}/{len(windows)}")',
             'reporter.progress(i, len(windows), f"window {i + 1}/{len(windows)}")', (FIGURES,)),
    Mutation("first-divergence-off-by-one", "compare reports the token after the first divergence",
             "engine/analysis/compare.py", "        if x != y:\n            return i\n",
             "        if x != y:\n            return i + 1\n",
             (FIGURES, "tests/test_eval_runtime.py::test_compare_finds_the_first_diverging_token")),
    Mutation("estimate-file-1pct", "estimate's file_bytes 1 % too large", "engine/estimate/file_size.py",
             "file_bytes=header + total,", "file_bytes=(header + total) * 101 // 100,", (SIZES,)),
    Mutation("estimate-header-32-bytes", "estimate's header one alignment unit too large",
             "engine/estimate/file_size.py", "pad(_FIXED_HEADER + kv + infos)",
             "pad(_FIXED_HEADER + kv + infos) + 32", (SIZES,)),
    Mutation("bits-per-weight-with-header", "bits per weight counting the header, unlike llama.cpp",
             "engine/estimate/file_size.py", "return self.tensor_bytes * 8 / self.n_params",
             "return self.file_bytes * 8 / self.n_params", (SIZES,)),
    Mutation("memory-without-embeddings", "memory to run leaves out the token embeddings",
             "engine/estimate/memory.py", "    w_ram = sum(per_layer[:first_gpu]) + embd\n",
             "    w_ram = sum(per_layer[:first_gpu])\n", (SIZES,)),
    Mutation("memory-gpu-split-off-by-one", "one offloaded block's weights missing from the GPU's memory",
             "engine/estimate/memory.py", "w_vram = sum(per_layer[first_gpu:]) if gpu_layers else 0",
             "w_vram = sum(per_layer[first_gpu + 1:]) if gpu_layers else 0",
             ("tests/test_estimate.py::test_run_memory_parts_and_gpu_split",)),
    Mutation("converter-gate-up-swapped", "the converter swaps ffn_gate and ffn_up", FAMILY, GATE_UP,
             GATE_UP + '            swap = {".ffn_gate.": ".ffn_up.", ".ffn_up.": ".ffn_gate."}\n'
             '            gname = next((gname.replace(a, b) for a, b in swap.items() if a in gname), gname)\n',
             ("tests/test_sources_logits.py",)),
    Mutation("f16-written-as-bf16", "float16 source tensors written as BF16", "engine/models/families/tensors.py",
             '"F16": gguf.GGMLQuantizationType.F16,', '"F16": gguf.GGMLQuantizationType.BF16,',
             ("tests/test_sources_logits.py",)),
    Mutation("convert-progress-from-zero", "conversion progress counts tensors from 0", "engine/gguf/convert.py",
             "for i, t in enumerate(planned, 1):", "for i, t in enumerate(planned):",
             ("tests/test_gguf_engine.py::test_cli_json_progress_and_ctrl_c",)),
    Mutation("error-split-over-two-lines", "an error message split over two lines (the app then drops the fix)",
             "engine/core/outputs.py", 'does not exist; create it or choose another {what}", setting=what)',
             'does not exist;\\ncreate it or choose another {what}", setting=what)',
             ("tests/test_gguf_engine.py::test_bad_inputs_give_one_clear_line",
              "tests/test_app_quantize.py::test_failure_shows_the_engines_words")),
    Mutation("cancel-keeps-temporaries", "temporaries kept on cancel", "engine/gguf/quantize.py",
             "                if p != src_path:\n                    p.unlink(missing_ok=True)\n",
             "                if p != src_path:\n                    pass\n",
             ("tests/test_gguf_engine.py::test_cancel_leaves_nothing_behind",)),
    Mutation("tokens-per-second-one-short", "generation tokens/s counts one token fewer than decoded",
             "engine/analysis/bench.py", "return n_gen / rt.time_generation(random_tokens(n_gen))",
             "return (n_gen - 1) / rt.time_generation(random_tokens(n_gen))",
             ("tests/test_eval_runtime.py::test_bench_arithmetic_on_known_times",
              "tests/test_eval_runtime.py::test_bench_rates_are_tokens_over_the_measured_seconds")),
    Mutation("tokens-per-second-with-warmup", "the warm-up run counted among the timed runs", "engine/analysis/bench.py",
             "            if i or not warmup:\n", "            if True:\n",
             ("tests/test_eval_runtime.py::test_bench_arithmetic_on_known_times",)),
    Mutation("chat-tokens-per-second-with-first", "chat's tokens/s counts the first token against generation time",
             "engine/runtime/chat.py", "tokens_per_second=(n - 1) / gen if", "tokens_per_second=n / gen if",
             ("tests/test_app_chat.py::test_chat_figures_on_a_known_clock",)),
    Mutation("histogram-of-dequantized", "the weight histogram counts the dequantized weights", "engine/analysis/stats.py",
             "w_counts = _histogram(w, wlo, whi, bins)", "w_counts = _histogram(d, wlo, whi, bins)",
             ("tests/test_eval_runtime.py::test_stats_histograms_and_errors_equal_numpy",
              "tests/test_app_analysis.py")),
    Mutation("rmse-over-n-minus-1", "RMSE divides by n - 1", "engine/analysis/stats.py", "rmse=math.sqrt(se2 / n), max_abs_error=emax,",
             "rmse=math.sqrt(se2 / (n - 1)), max_abs_error=emax,",
             ("tests/test_eval_runtime.py::test_stats_histograms_and_errors_equal_numpy",)),
    Mutation("stats-progress-from-zero", "stats progress counts tensors from 0", "engine/analysis/stats.py",
             "reporter.progress(i + 1, len(todo), name)", "reporter.progress(i, len(todo), name)",
             ("tests/test_eval_runtime.py::test_stats_histograms_and_errors_equal_numpy",)),
    Mutation("compare-highlights-next-token", "Compare highlights the token after the first divergence",
             "app/views/compare/__init__.py", "if diverge_at is not None and i == diverge_at:",
             "if diverge_at is not None and i == diverge_at + 1:",
             ("tests/test_app_compare.py::test_side_by_side_marks_the_divergence",)),
    Mutation("eval-label-shows-median", "the KLD label shows the median where it says 99th percentile",
             "app/services/evaluation.py", 'd["kld"]["p99"]', 'd["kld"]["median"]',
             ("tests/test_app_compare.py::test_full_eval_shows_the_engines_figures",)),
    Mutation("memory-cell-without-kv-cache", "the type table's memory column leaves out the KV cache",
             "app/views/quantize/format_page.py", "setText(human_bytes(est.run.total_bytes))",
             "setText(human_bytes(est.run.total_bytes - est.run.kv_cache_bytes))",
             ("tests/test_app_quantize.py::test_estimate_cells_are_the_engines_estimate",)),
    Mutation("layer-bars-show-rmse", "Analysis draws each layer's RMSE where it says relative error",
             "app/views/analysis.py", "heights = [r.relative_error for r in self.layer_rows]",
             "heights = [r.rmse for r in self.layer_rows]", ("tests/test_app_analysis.py",)),
    Mutation("sweep-positions-shifted", "the context sweep files each position's KLD one position later",
             "engine/analysis/sweep.py", "pos = np.tile(np.arange(ctx - 1), len(kld_all))",
             "pos = np.tile(np.arange(1, ctx), len(kld_all))",
             ("tests/test_context_sweep.py::test_kld_by_position_matches_numpy_on_both_models_logits",)),
    Mutation("kv-type-ignored", "the KV cache type is not passed to llama.cpp (always f16)", "engine/runtime/gguf.py",
             "type_k=kv_ggml, type_v=kv_ggml,", "",
             ("tests/test_context_sweep.py::test_quantized_kv_cache_costs_more_as_it_gets_coarser",)),
    Mutation("task-accuracy-other-side", "the task set scores the quantized model's replies for the original",
             "engine/analysis/taskset.py", "correct_a=answer_matches(item.answer, reply_a)",
             "correct_a=answer_matches(item.answer, reply_b)",
             ("tests/test_task_compare.py::test_accuracy_equals_a_direct_count_of_matching_answers",)),
]


def _copy_tree(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.egg-info", "screenshots")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _pytest(tree: Path, tests: tuple[str, ...], timeout: int, stop: bool = True) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "pytest", "-q", *(["-x"] if stop else []), "-p", "no:cacheprovider",
           "-o", "addopts=", *tests]
    started = time.monotonic()
    try:
        res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out", time.monotonic() - started
    lines = (res.stdout + res.stderr).strip().splitlines()
    failed = [line.split()[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    summary = (failed[0] if stop else " ".join(failed)) if failed else (lines[-1] if lines else "")
    return res.returncode, summary, time.monotonic() - started


def _apply(tree: Path, m: Mutation) -> str:
    path = tree / m.path
    original = path.read_text(encoding="utf-8")
    count = original.count(m.old)
    if count != 1:
        raise SystemExit(f"{m.name}: the text to change occurs {count} times in {m.path}; update the mutation")
    path.write_text(original.replace(m.old, m.new), encoding="utf-8")
    return original


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--baseline", action="store_true", help="run the selected tests on the unchanged copy first")
    ap.add_argument("--timeout", type=int, default=900, help="seconds for one mutation's tests (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--keep-going", action="store_true",
                    help="run all of a mutation's tests instead of stopping at the first failure")
    args = ap.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:32} {m.path:28} {m.what}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    chosen = [known[n] for n in args.names] if args.names else MUTATIONS
    tmp = Path(tempfile.mkdtemp(prefix="nibble-mutations-"))
    tree = _copy_tree(tmp / "tree")
    rows = []
    try:
        for m in chosen:  # every replacement must apply before anything runs
            (tree / m.path).write_text(_apply(tree, m), encoding="utf-8")
        if args.baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            rc, summary, secs = _pytest(tree, tests, args.timeout * 2)
            print(f"baseline: {summary} ({secs:.0f} s)", flush=True)
            if rc != 0:
                print("the selected tests fail on the unchanged tree; fix that first", file=sys.stderr)
                return 1
        for m in chosen:
            original = _apply(tree, m)
            try:
                rc, summary, secs = _pytest(tree, m.tests, args.timeout, stop=not args.keep_going)
            finally:
                (tree / m.path).write_text(original, encoding="utf-8")
            verdict = {0: "NOT CAUGHT", 1: "caught"}.get(rc, f"error (pytest exit {rc})")
            rows.append((m, verdict, summary, secs))
            print(f"{m.name:32} {verdict:12} {secs:5.0f} s  {summary}", flush=True)
    finally:
        if args.keep:
            print(f"copy kept at {tree}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| mutation | change to the code | result | first failing test |")
    print("|---|---|---|---|")
    for m, verdict, summary, _ in rows:
        failing = f"`{summary.split('::', 1)[0].removeprefix('tests/')}::{summary.split('::', 1)[1]}`" \
            if verdict == "caught" and "::" in summary else summary
        print(f"| `{m.name}` | {m.what} | {verdict} | {failing} |")
    missed = [m.name for m, verdict, _, _ in rows if verdict != "caught"]
    if missed:
        print(f"\nnot caught: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
