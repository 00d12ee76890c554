"""Every notebook runs under papermill with the small parameters of notebooks/params/smoke.yaml,
and the lessons it states are asserted on the values it recorded. A notebook without a check
here, committed with outputs, or without typed, commented parameters fails the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from compile_ckpt.workshop.record import TAG as RECORD_TAG
from compile_ckpt.workshop.runner import (
    load_parameter_files,
    notebooks_in,
    parameters_cell,
    plan,
    run_notebook,
)
from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
SMOKE = load_parameter_files([str(NOTEBOOKS / "params" / "smoke.yaml")])
GPU = torch.cuda.is_available()


def check_00(r: dict[str, Any]) -> None:
    assert r["cxx_compiler_works"] is True and r["compile_adds_orig_mod_prefix"] is True
    assert r["device"] == ("cuda" if GPU else "cpu") and r["gpu_usable"] is GPU
    assert r["torch_build"] == (
        "CPU only" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
    )
    assert r["compiled_vs_eager_max_abs_diff"] < 1e-4 and r["torch_matches_pin"] is True
    # with a working compiler, Inductor compiled the call and the verdict says all runs
    assert r["backend_used"] == r["compile_backend"] == "inductor" and not r["compile_error"]
    assert r["inductor_ok"] is True and "no-compiler.yaml" not in r["verdict"]
    assert r["same_checkout"] is True  # the kernel runs this checkout's code


def check_01(r: dict[str, Any]) -> None:
    assert r["fresh_load_error_type"] == "RuntimeError"
    assert r["fresh_load_missing"] == r["fresh_load_unexpected"] == 12
    assert r["fresh_load_offending_segments"] == ["_orig_mod"]
    assert all(k.startswith("_orig_mod.") for k in r["fresh_load_unexpected_keys"])
    assert r["reverse_load_fails"] is True and r["reverse_missing_segments"] == ["_orig_mod"]
    assert r["alike_loads"] is True  # both sides wrapped alike
    # trap 1: strict=False raises nothing, returns every key as missing, and leaves the random
    # init bit for bit
    assert r["strict_false_missing"] == 12 and r["strict_false_weights_unchanged"] is True
    # trap 2: torch.save(compiled) pickles the compiler's classes; weights_only=True refuses it
    assert "torch._dynamo.eval_frame.OptimizedModule" in r["pickled_module_globals"]
    assert r["pickled_module_weights_only_error"] == "UnpicklingError"
    assert r["explorer_plain_load"].startswith("fails") and r["exercise_01"] == "not attempted"
    assert r["explorer_shows_library"] is False  # plain PyTorch only: the library comes in 02


def check_02(r: dict[str, Any]) -> None:
    assert r["fix_prediction_max_abs_diff"] == 0.0 and r["fix_vs_compiled_max_abs_diff"] < 1e-4
    assert r["final_val_loss"] < r["pretrain_val_loss"]  # final training continued and improved
    assert (
        r["seed_fix_compiled_submodule_loads"] is False
        and r["seed_fix_clean_into_compiled_loads"] is False
    )
    # the ten plain lines handle every direction, verified weight by weight and by predictions
    assert len(r["plain_loader_same_weights"]) == 4 and all(r["plain_loader_same_weights"].values())
    assert r["plain_loader_prediction_max_abs_diff"] == 0.0
    assert len(r["library_handles"]) == 4 and all(r["library_handles"].values())
    reports = r["library_reports"]  # the report lines the notebook explains
    assert "removed '_orig_mod.' from 12 keys" in reports["compiled file -> eager model"]
    assert "added '_orig_mod.' to 12 keys" in reports["clean file -> compiled model"]
    moved = reports["compiled file -> model with a compiled submodule"]
    assert (
        "reordered wrapper segments in 4 keys" in moved
        and "removed '_orig_mod.' from 8 keys" in moved
    )
    assert r["moved_key"] == ["_orig_mod.cnn_layers.0.weight", "cnn_layers._orig_mod.0.weight"]
    assert r["library_prediction_max_abs_diff"] == 0.0
    assert (
        r["explorer_seed_fix_on_submodule"].startswith("fails")
        and r["explorer_library_on_submodule"] == "loads"
    )
    assert r["exercise_02"] == "not attempted"  # the committed stub


def check_03(r: dict[str, Any]) -> None:
    t = {row["recipe"]: row for row in r["alternatives"]}
    # PyTorch's recommendation first
    assert (
        list(t)[0] == "model.compile() in place" and len(t) == 8
    )
    assert all(row["same preds"] for row in t.values())
    inplace, hooks, dcp, lib = (
        t["model.compile() in place"],
        t["state-dict hooks"],
        t["get/set_model_state_dict"],
        t["save_checkpoint / load_checkpoint"],
    )
    # what the decision guide says about each, as measured
    assert (
        inplace["clean keys"]
        and inplace["→ compiled"]
        and inplace["submodule"]
        and not inplace["legacy file"]
    )
    assert not inplace["reads _orig_mod"] and not inplace["DDP"]
    consume = t["consume_prefix on load"]
    assert consume["legacy file"] and not consume["submodule"] and not consume["→ compiled"]
    assert (
        lib["legacy file"]
        and lib["submodule"]
        and lib["→ compiled"]
        and lib["DDP"]
        and not lib["reads _orig_mod"]  # it walks the registered children, as DCP does
    )
    assert dcp["DDP"] and dcp["clean keys"] and not dcp["legacy file"]
    assert hooks["clean keys"] and hooks["→ compiled"] and hooks["submodule"]
    assert (
        not t["compile before loading"]["clean keys"]
        and t["save model._orig_mod"]["reads _orig_mod"]
    )
    assert not t["save model._orig_mod"]["submodule"] and not t["save model._orig_mod"]["DDP"]
    assert t["no compile"]["→ compiled"] is None and t["no compile"]["submodule"] is None
    assert r["exercise_03"] == "not attempted"  # the committed stub


def check_04(r: dict[str, Any]) -> None:
    assert (
        r["pretrain_losses"][-1] < r["pretrain_losses"][0]
        and r["final_losses"][-1] < r["final_losses"][0]
    )
    assert r["scenario2_max_abs_diff"] == 0.0 and r["scenario2_vs_compiled_max_abs_diff"] < 1e-4
    assert r["resume_max_abs_diff"] == 0.0 and r["checkpoint_dict_keys"] == [
        "epoch",
        "model",
        "optimizer",
        "rng",
        "scheduler",
    ]
    # the optimizer trap: names with _orig_mod. copied silently, then renamed
    assert all(n.startswith("_orig_mod.") for n in r["optimizer_names_after_load"])
    assert not any("_orig_mod" in n for n in r["optimizer_names_after_fix"])
    # the library's resume restores into the plain model (nothing added) and continues exactly
    assert "nothing renamed" in r["library_report"] and "added" not in r["library_report"]
    assert "also holds" not in r["library_report"]  # the RNG state is an entry, not a model
    assert (
        "optimizer and scheduler" in r["library_report"] and r["library_resume_max_abs_diff"] == 0.0
    )
    assert r["legacy_loads"] is True and r["legacy_removed_prefixes"] == {"_orig_mod.": 12}
    assert r["legacy_max_abs_diff"] == 0.0 and r["exercise_04"] == "not attempted"


def check_05(r: dict[str, Any]) -> None:
    # the workshop model, eager and compiled interleaved in one process, per dtype
    assert set(r["model_speedup"]) == set(r["dtypes"])
    assert all(lo <= s <= hi for s, lo, hi in r["model_speedup"].values())
    assert all(t > 0 for t in r["model_first_step_s"].values())
    # trap: predicting with the compiled model after fitting recompiles (eval + no_grad), the
    # training graph stays cached, and the plain module predicts the same without compiling
    assert r["eval_recompiles"] >= 1 and r["train_again_recompiles"] == 0
    assert r["plain_recompiles"] == 0 and r["predict_max_abs_diff"] < 1e-4
    assert r["predict_first_s"] > r["predict_again_s"]  # the recompilation is paid once
    # graph breaks: one deliberate break, two graphs; measured against the fixed model
    assert r["explain_graphs"] == 2 and r["explain_graph_breaks"] == 1
    assert len(r["graph_break_table"]) == 3
    for s, lo, hi in (r["break_removal_speedup"], r["fixed_vs_eager"]):
        assert lo <= s <= hi
    # a ragged last batch recompiles once; each fix compiles one graph
    ragged = dict(r["ragged_graphs"])
    assert ragged.pop("ragged last batch") == 2 and set(ragged.values()) == {1}
    # trap: past the recompile limit calls run eagerly without an error; made loud, it raises,
    # and the config is as it was after the with block; dynamic shapes get out
    fell, out = r["limit_fell_in"], r["limit_got_out"]
    assert fell["graphs"] == r["recompile_limit"] and fell["ran compiled"] < fell["calls"]
    assert r["limit_loud_error"] == "FailOnRecompileLimitHit" and r["limit_config_restored"]
    assert out["ran compiled"] == out["calls"] and out["graphs"] < fell["graphs"]
    # TORCH_TRACE wrote a log with both compiles of the traced script, the second a recompile
    assert r["trace_files"] and len(r["trace_compiles"]) == 2
    assert r["trace_compiles"][1]["why"] != "first call"
    assert r["trace_records"].get("inductor_output_code") == 2
    # the verdict: the workshop model only, this run and the committed GPU record
    assert r["gpu_results_shown"] is True and r["verdict_rows"] > len(r["dtypes"])
    assert all("workshop model" in line and "95% interval" in line for line in r["verdict"])
    assert r["verdict"][0].startswith("this run")
    _, low, high = r["model_speedup"][r["dtypes"][0]]
    assert ("no measurable difference" in r["verdict"][0]) == (low <= 1.0 <= high)
    assert r["takeaway"][0].startswith("Compiling the workshop model")
    if r["full"]:
        check_05_full(r)


def check_05_full(r: dict[str, Any]) -> None:
    rows = r["gpt_table"]
    compiled = {row["route"]: row for row in rows if row["mode"] != "eager"}
    assert set(compiled) == {"cold", "warm", "mega-cache", "regional"}  # four latency rows...
    assert all(row["first_step_s"] > 0 for row in compiled.values())  # ...never compared
    assert all(
        row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1 and row["loss_agrees"] for row in rows
    )
    assert all(row["ci_low"] <= row["speedup"] <= row["ci_high"] for row in rows)
    # ratios only within a process: each row keeps its own; one pooled steady-state comparison
    assert all(
        row["process_ci_low"] <= row["process_speedup"] <= row["process_ci_high"] for row in rows
    )
    assert compiled["cold"]["speedup"] == compiled["warm"]["speedup"]
    assert r["gpt_eager_spread"] >= 1
    # where the latency goes, as the notebook explains it: warm and mega-cache find every graph
    # in a cache...
    assert compiled["cold"]["cache_misses"] > 0 and compiled["cold"]["libraries_built"] > 0
    assert compiled["warm"]["cache_misses"] == 0 and compiled["warm"]["cache_hits"] > 0
    assert compiled["mega-cache"]["cache_hits"] == compiled["warm"]["cache_hits"]
    assert compiled["mega-cache"]["cache_misses"] == 0
    # ...but only warm keeps what the compiler built; on a CPU the mega-cache rebuilds the C++
    # libraries
    assert compiled["warm"]["libraries_built"] == 0
    if not GPU:
        assert compiled["mega-cache"]["libraries_built"] == compiled["cold"]["libraries_built"]
        # the CPU probe is timed once, apart, by the cold route; the other new caches start from
        # its answer
        assert compiled["cold"]["cpu_probe_s"] > 0 and compiled["mega-cache"]["cpu_probe_s"] == 0
        assert any("probe of this CPU" in line for line in r["takeaway"])
    assert all("graph_breaks" in row and "recompiles" in row for row in rows)
    assert any("cold cache" in x for x in r["takeaway"])
    # the mega-cache summary counts what it saved and what loaded back
    assert r["mega_cache_bytes"] > 0 and sum(r["mega_cache_kinds"].values()) > 0
    assert r["mega_cache_loaded"] == sum(r["mega_cache_kinds"].values())
    assert (
        r["regional_keys_have_orig_mod"]
        and r["regional_inplace_keys_clean"]
        and r["regional_by_hand_ok"]
        and r["regional_roundtrip_ok"]
    )


def check_06(r: dict[str, Any]) -> None:
    inductor = r["activation_checkpointing"]["compile_backend"] == "inductor"
    assert r["cudagraphs_ran_here"] is (GPU and inductor)  # reduce-overhead is Inductor's
    # a record of another experiment is labelled as such (the training-loop record is measured
    # on a GPU)
    assert r["cudagraph_record_is_lesson"] == (
        r["cudagraphs"]["experiment"].startswith("training steps")
    )
    if GPU:
        assert r["cudagraph_record_is_lesson"] is True
    variants = r["cudagraphs"]["variants"]
    failing = [name for name, v in variants.items() if not v["works"]]
    assert failing and all(
        "overwritten by a subsequent run" in variants[n]["error"] for n in failing
    )
    assert all(v["works"] for name, v in variants.items() if "clone" in name or "default" in name)
    assert not any("mark_step_begin" in name and "fix" in name for name in variants)
    rows = r["activation_checkpointing"]["rows"]
    for mode in ("eager", "compiled"):
        plain, ckpt = (
            next(x for x in rows if x["mode"] == mode and x["checkpointing"] is c)
            for c in (False, True)
        )
        assert plain["loss"] == ckpt["loss"] and ckpt["grad_max_abs_diff"] == 0.0
        assert ckpt["saved_mb"] < plain["saved_mb"]  # measured in the mode the row names
    # use_reentrant left out: PyTorch warns (or raises) about it; reentrant loses the gradients
    # of a block whose input does not require grad, non-reentrant keeps them
    omitted = r["use_reentrant_omitted"]
    assert omitted["raised"] or "use_reentrant" in omitted["warning"]
    assert r["weight_gets_grad"] == {"use_reentrant=True": False, "use_reentrant=False": True}
    # a graph break inside the checkpointed region leaves its convolutions uncompiled; without
    # it every convolution is inside a compiled graph, with no break
    watched, fixed = (r["graph_break_in_region"][k] for k in ("watched", "fixed"))
    assert watched["graph_breaks"] > 0 and watched["convs_compiled"] < watched["convs_total"]
    assert fixed["graph_breaks"] == 0 and fixed["convs_compiled"] == fixed["convs_total"] > 0
    ro = r["ac_reduce_overhead"]  # GPU only (pytorch#154306): measured there, else said why
    assert ro["ran_here"] is (GPU and inductor)
    assert bool(ro["variants"]) is ro["ran_here"] and bool(ro["why_not"]) is not ro["ran_here"]
    if ro["ran_here"]:
        assert all(v["works"] or v["error"] for v in ro["variants"].values())
    cw = r["checkpoint_wrapper"]
    assert "_checkpoint_wrapped_module" not in cw["state_dict_keys"][0]
    assert (
        "_checkpoint_wrapped_module" in cw["named_parameters"][0] and cw["loads_into_plain"] is True
    )
    assert cw["plain_names_match"] is True  # stripped by hand in plain PyTorch, first
    orders = r["ddp_orders"]
    assert orders["model.compile(), then DDP(model)"]["keys"][0] == "module.cnn_layers.0.weight"
    assert orders["DDP(torch.compile(model))"]["keys"][0].startswith("module._orig_mod.")
    assert orders["torch.compile(DDP(model))"]["keys"][0].startswith("_orig_mod.module.")
    assert all(
        o["saved_keys"][0] == "cnn_layers.0.weight" and o["max_abs_diff"] <= 1e-5
        for o in orders.values()
    )
    # the plain unwrap and the library agree
    assert all(
        o["library_same_keys"] for o in orders.values()
    )
    # the table shows each difference as recorded, not rounded to 0
    for name, shown in r["ddp_diff_shown"].items():
        assert float(shown) == pytest.approx(orders[name]["max_abs_diff"], rel=0.06, abs=0.0)
    assert r["dcp"]["converted_ok"] is True and r["dcp"]["keys"][0] == "cnn_layers.0.weight"
    assert r["ddp_resume_max_abs_diff"] == 0.0


def check_07(r: dict[str, Any]) -> None:
    assert r["ema_by_name_moved"] == 0.0 and r["ema_weights_moved"] > 0  # silently never tracks
    assert r["ema_right_moved"] > 0 and r["ema_right_loads"] and r["ema_key_loads"]
    # the EMA of the compiled wrapper: two prefixes stripped by hand load strictly, and predict
    # as the averager's own copy does; then the library, told the averager's prefix
    assert r["ema_of_compiled_plain_same"] is True
    assert r["ema_of_compiled_loads_with_prefix"] and r["export_plain_keys_clean"]
    assert r["lightning_plain_strip_identical"] is True
    if r["aoti"]["built"]:
        assert r["aoti"]["max_abs_diff"] <= 1e-5 and r["aoti_swapped_max_abs_diff"] <= 1e-5
    else:
        assert r["aoti"]["why_not"]
    f = r["fsdp2"]
    assert f["loads"] and f["identical"] and f["live_type"] == "DTensor"
    assert "_orig_mod" in f["wrapped_live_keys"][0] and "_orig_mod" not in f["wrapped_dcp_keys"][0]
    assert f["live_keys"][0] == f["dcp_keys"][0] == "blocks.0.ln1.weight"
    assert all(t["ok"] and t["identical"] and t["plain"] != "loads" for t in r["trainers"].values())
    # from_pretrained dropped a block
    assert (
        r["trainers"]["transformers"]["from_pretrained_max_abs_diff"] > 0
    )
    assert set(r["trainer_versions"]) == {"lightning", "accelerate", "transformers"}


def check_08(r: dict[str, Any]) -> None:
    # 1. freezing after compiling recompiles; the optimizer built before the freeze keeps the
    # frozen tensors' state, and moves them when gradients are zeroed instead of dropped
    assert r["freeze_recompiles"] >= 1
    assert r["late_frozen_moved"] == 0 and r["late_frozen_state"] > 0
    assert r["late_frozen_state_bytes"] > 0 and r["zeroing_frozen_moved"] > 0
    fixed = r["fixed_freeze"]  # freeze, optimizer of the trainable, compile: the stance held
    assert fixed["frozen_moved"] == 0 and fixed["frozen_state"] == 0
    assert fixed["state"] > 0 and fixed["trained_moved"] > 0
    assert "parameter groups" in r["resume_refused"] and r["weights_only_ok"]
    # 2. LoRA on the wrapper: a regex finds nothing; a list works, but its file loads as nothing
    assert "not found" in r["lora_regex_error"]
    assert r["lora_wrapper_keys"] and all("_orig_mod." in k for k in r["lora_wrapper_keys"])
    assert "missing adapter keys" in r["lora_warning"]
    assert r["lora_lost"] == {"equals_finetuned": False, "equals_pretrained": True}
    assert r["lora_plain_keys"] and not any("_orig_mod" in k for k in r["lora_plain_keys"])
    assert r["lora_fixed"] == {"warnings": 0, "identical": True}
    rescue = r["lora_rescue"]
    assert rescue["identical"] and rescue["same_as_by_hand"] and rescue["unexpected"] == 0
    assert rescue["renamed"] == len(r["lora_wrapper_keys"])
    # 3. a float LR recompiles (each value, with dynamic=False, up to the limit, then silently
    # uncompiled); a tensor LR builds one graph; same LRs and weights as the uncompiled run
    assert len(set(r["eager_lrs"])) == r["lr_steps"]
    assert r["float_graphs"] >= 2
    assert r["static_graphs"] == r["recompile_limit"] and r["static_limit_hit"]
    assert r["limit_restored"] == torch._dynamo.config.recompile_limit
    assert r["static_weights_max_abs_diff"] <= 1e-5
    assert r["lr_fixed"]["graphs"] == 1 and r["lr_fixed"]["lr_max_rel_diff"] <= 1e-5
    assert r["lr_fixed"]["weights_max_abs_diff"] <= 1e-5


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "00_check_setup": check_00,
    "01_reproduce_the_failure": check_01,
    "02_fix_clean_on_load": check_02,
    "03_alternatives": check_03,
    "04_pretrain_finetune_pipeline": check_04,
    "05_benchmark_compiled_vs_eager": check_05,
    "06_pitfalls_and_scaling_out": check_06,
    "07_beyond_training": check_07,
    "08_fine_tuning_a_compiled_model": check_08,
}


def test_every_notebook_has_a_check():
    names = {p.stem for p in notebooks_in(NOTEBOOKS)}
    assert names == set(CHECKS), f"notebooks without a check: {sorted(names - set(CHECKS))}"


@pytest.mark.parametrize("path", notebooks_in(NOTEBOOKS), ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_well_formed(path: Path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{path.name} is committed with outputs or execution counts; clear them"
    )
    assert nb["cells"][0]["cell_type"] == "markdown" and "What you will learn" in "".join(
        nb["cells"][0]["source"]
    )
    assert nb["metadata"]["kernelspec"]["name"] == "compile-ckpt"
    params = parameters_cell(path)
    source = "".join(
        next(c["source"] for c in code if "parameters" in c["metadata"].get("tags", []))
    )
    assert all(line.count("  # ") == 1 for line in source.splitlines()), (
        "every parameter has a help comment"
    )
    assert params["device"] == ("auto", "str")
    assert "if CI" not in path.read_text() and 'environ.get(\\"CI' not in path.read_text()
    # lesson cells hold lesson code: the values the tests read are recorded in one trailing,
    # collapsed cell
    *lesson, last = code
    assert (
        RECORD_TAG in last["metadata"].get("tags", [])
        and last["metadata"]["jupyter"]["source_hidden"] is True
    )
    assert "record_all(" in "".join(last["source"])
    for cell in lesson:
        src = "".join(cell["source"])
        assert "record(" not in src and "record_all(" not in src and "workshop.record" not in src, (
            src[:80]
        )
        assert RECORD_TAG not in cell["metadata"].get("tags", [])


def run_ok(path: Path, files: dict[str, dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Run ``path`` with the parameter ``files`` and an explicit device (a nightly job passes
    one to all); its records, once it ran to its end."""
    [(_, params, why)] = plan([path], files, {"device": "cuda" if GPU else "cpu"},
                              notebooks_in(NOTEBOOKS))
    assert not why
    run = run_notebook(path, tmp_path / path.name, params, timeout=900,
                       workdir=tmp_path / "artifacts")
    assert run.status == "ok", run.error
    return run.records


@pytest.mark.slow
@pytest.mark.parametrize("path", notebooks_in(NOTEBOOKS), ids=lambda p: p.stem)
def test_notebook_runs_and_teaches_what_it_says(path, tmp_path):
    CHECKS[path.stem](run_ok(path, SMOKE, tmp_path))


def _kernel_cell(prelude: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Notebook 00's kernel check, run as a script after ``prelude``, in ``cwd``."""
    nb = json.loads((NOTEBOOKS / "00_check_setup.ipynb").read_text())
    cell = next(
        "".join(c["source"])
        for c in nb["cells"]
        if 'import_module("compile_ckpt.workshop")' in "".join(c["source"])
    )
    return subprocess.run([sys.executable, "-c", prelude + cell], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_the_kernel_check_names_the_fix_when_the_project_is_missing(tmp_path):
    """Notebook 00's first cell runs in any kernel; without the package it prints the exact fix,
    with the index options this environment was installed with (``.venv/.pip-args``)."""
    (tmp_path / ".pip-args").write_text("--extra-index-url file:///mirror\n")
    blocker = (f"import sys; sys.modules['compile_ckpt'] = None; sys.prefix = {str(tmp_path)!r}\n"
               "expected_torch = '0.0.0'\n")
    r = _kernel_cell(blocker, NOTEBOOKS)
    assert r.returncode != 0 and "This kernel cannot run the workshop" in r.stdout
    assert (f"{sys.executable} -m pip install --extra-index-url file:///mirror -r "
            "requirements.txt -e '.[workshop]'") in r.stdout
    assert "Python (compile-ckpt" in r.stdout


def test_the_kernel_check_says_which_checkout_it_runs(tmp_path):
    """A notebook opened in another checkout than its kernel's code is warned, naming both; the
    torch-version note adds PyTorch's CPU index to the indexes in use instead of replacing them."""
    here = _kernel_cell("expected_torch = '0.0.0'\n", NOTEBOOKS)
    assert here.returncode == 0, here.stderr
    assert str(ROOT) in here.stdout and "WARNING" not in here.stdout
    assert "--extra-index-url https://download.pytorch.org/whl/cpu torch==0.0.0" in here.stdout
    other = tmp_path / "other-checkout"
    (other / "notebooks").mkdir(parents=True)
    (other / "pyproject.toml").write_text("")
    there = _kernel_cell("expected_torch = '0.0.0'\n", other / "notebooks")
    assert there.returncode == 0, there.stderr
    warning = next(line for line in there.stdout.splitlines() if line.startswith("WARNING"))
    assert str(other) in warning and str(ROOT) in warning


@pytest.mark.slow
def test_explicit_cuda_without_gpu_fails_clearly(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    if GPU:
        pytest.skip("this machine has a GPU: device='cuda' is valid here")
    with pytest.raises(PapermillExecutionError, match="no CUDA GPU"):
        run_notebook(NOTEBOOKS / "00_check_setup.ipynb", tmp_path / "00.ipynb", {"device": "cuda"},
                     timeout=300, workdir=tmp_path)
