"The report helpers (nash_lit.report): mean ± std, paired t-intervals and their verdicts, tables, provenance."

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st

from nash_lit.report import (
    PairedDifference,
    beside_paper,
    describe_difference,
    device_name,
    markdown_table,
    mean_std,
    paired_difference,
    provenance,
)


def test_mean_std():
    assert mean_std([0.041, 0.043, 0.045], 100) == "4.30 ± 0.20"
    assert mean_std([1, 2], digits=1) == "1.5 ± 0.7"
    assert mean_std([3.14159], digits=3) == "3.142"
    assert mean_std([]) == "" and mean_std([math.nan]) == "" and mean_std([None, 2.0]) == "2.00"
    assert mean_std(pd.Series([0.1, 0.3]), 100, 0) == "20 ± 14"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=8), st.floats(0.5, 0.99))
def test_interval_is_scipys(d, confidence):
    a = {k: v for k, v in enumerate(d)}
    b = {k: 0.0 for k in range(len(d))}
    p = paired_difference(a, b, confidence)
    low, high = (
        scipy.stats.t.interval(confidence, len(d) - 1, loc=np.mean(d), scale=scipy.stats.sem(d))
        if np.std(d) > 0
        else (np.mean(d), np.mean(d))
    )
    assert p.n == len(d) and math.isclose(p.mean, np.mean(d), abs_tol=1e-9)
    assert math.isclose(p.low, low, abs_tol=1e-6) and math.isclose(p.high, high, abs_tol=1e-6)
    assert p.verdict == ("lower" if p.high < 0 else "higher" if p.low > 0 else "indistinguishable")


def test_pairs_by_seed_only():
    p = paired_difference({0: 1.0, 1: 2.0, 7: 100.0}, {1: 1.0, 0: 0.0, 3: -5.0})
    assert (p.n, p.mean) == (2, 1.0)  # seeds 0 and 1; 7 and 3 have no partner
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1}, {1: 1})


def test_verdicts_from_the_interval():
    assert PairedDifference(-1, -2, -0.5, 3, 0.95).verdict == "lower"
    assert PairedDifference(1, 0.5, 2, 3, 0.95).verdict == "higher"
    assert PairedDifference(0.1, -1, 1.2, 3, 0.95).verdict == "indistinguishable"
    one = paired_difference({0: 1.0}, {0: 3.0})
    assert one.verdict == "undecided" and math.isnan(one.low) and one.mean == -2.0
    text = describe_difference(one, "NASH", "seed")
    assert "cannot be decided" in text and "interval" not in text
    text = describe_difference(PairedDifference(-1, -2, -0.5, 3, 0.95), "NASH", "seed")
    assert text.startswith("NASH beats seed") and "95% interval [-2.00, -0.50]" in text


def test_tables_beside_the_paper():
    ours = pd.DataFrame([dict(method="NASH", budget="1 step", test_error_pct="5.1 ± 0.2", val=math.nan)])
    paper = pd.DataFrame([dict(method="NASH (paper)", budget="0.5 GPU days", test_error_pct=4.3, runs=5)])
    t = beside_paper(ours, paper)
    assert list(t.columns) == ["source", "method", "budget", "test_error_pct", "val", "runs"]
    assert list(t.source) == ["ours (scaled)", "paper (full scale)"] and t.runs[0] == "" and t.val[1] == ""
    assert beside_paper(ours, paper, scaled=False).source[0] == "ours"
    md = markdown_table(t, {"source": "source", "method": "method", "test_error_pct": "test error (%)"})
    assert md.splitlines() == [
        "| source | method | test error (%) |",
        "|---|---|---|",
        "| ours (scaled) | NASH | 5.1 ± 0.2 |",
        "| paper (full scale) | NASH (paper) | 4.3 |",
    ]


def test_provenance():
    h = provenance("cpu", device_name(torch.device("cpu")), 125, [0, 1], "abc1234", scale="cifar10 subsets")
    for needle in (
        "- profile: `cpu` (scaled",
        "- device: cpu (",
        "- wall time: 125 s (2.1 min)",
        "- seeds: [0, 1]",
        "- git commit: abc1234",
        f"- torch {torch.__version__}",
        "- scale: cifar10 subsets",
    ):
        assert needle in h, needle
    assert "scaled" not in provenance("paper", "cuda (H100)", 1, [0], "abc").splitlines()[0]
    assert "not recorded" in provenance("smoke", "cpu", 1, [0], None)
