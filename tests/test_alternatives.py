"""The ranking behind notebook 03's recommendation."""

from __future__ import annotations

import pandas as pd

from compile_ckpt.alternatives import CHECKS, passing_everything, recommend


def _row(option: str, passes: int, private: bool, ms: float) -> dict:
    return {"option": option, **{c: i < passes for i, c in enumerate(CHECKS)},
            "your code touches _orig_mod": private, "save+load ms": ms}


def test_recommend_ranks_by_checks_then_penalises_private_access_then_time():
    table = pd.DataFrame([_row("fast but private", len(CHECKS), True, 1.0),
                          _row("all checks", len(CHECKS), False, 3.0),
                          _row("all checks, faster", len(CHECKS), False, 2.0),
                          _row("partial", 3, False, 0.5)])
    ranked, lines = recommend(table)
    assert list(ranked.option) == ["all checks, faster", "all checks", "fast but private", "partial"]
    assert lines[0].startswith("Recommendation: all checks, faster") and "all of them" in lines[0]
    assert passing_everything(table) == ["all checks", "all checks, faster"]


def test_recommend_names_what_the_best_misses():
    table = pd.DataFrame([_row("a", len(CHECKS) - 1, False, 1.0), _row("b", 2, False, 1.0)])
    _, lines = recommend(table)
    assert f"(not: {CHECKS[-1]})" in lines[0]
