"""Acceptance of issue 12: nbs/10_table1 at the smoke profile, through tools/reproduce.py, has every arm of Table 1.

Every arm's row in table1.csv and its n_runs rows in table1_runs.csv, the epochs each arm was given, the paired
comparisons of both claims with their 95% intervals in table1.md, the final-epochs sizing (figure, table, sentence),
the failure counts and the commit in the header."""
import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from reproduce import load_profile  # noqa: E402

P = load_profile("smoke")
LAST = f"{P['budgets'][-1]} steps"
REF = P["reference"]
CLAIM1 = ["seed, same final training", "random search", f"{REF}, same final training"]
CLAIM2 = ["seed, trained as long", f"{REF}, trained as long"]
ARMS = {("NASH", f"{b} step{'s' if b != 1 else ''}") for b in P["budgets"]} | \
       {(m, LAST) for m in ["NASH, continued", *CLAIM1, *CLAIM2]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    "The smoke reproduction of Table 1, run once for the module."
    out = tmp_path_factory.mktemp("table1") / "smoke"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "reproduce.py"), "--profile", "smoke", "--reports", str(out),
                        "--notebooks", str(ROOT / "nbs" / "10_table1.ipynb")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def read_csv(path): return list(csv.DictReader(path.open()))


def test_smoke_profile_is_what_this_test_expects():
    assert P["budget_unit"] == "steps" and P["controls"] and P["reference"] in ("resnet-8", "resnet-20")
    assert P["final_epochs"] in P["sizing_epochs"]  # the sizing reuses the table's rows at final_epochs


def test_every_arm_has_its_row(report):
    rows = read_csv(report / "table1.csv")
    ours = [(r["method"], r["budget"]) for r in rows if r["source"].startswith("ours")]
    assert sorted(ours) == sorted(ARMS), set(ours) ^ ARMS
    assert all(r["runs"] == str(P["n_runs"]) for r in rows if r["source"].startswith("ours"))
    runs = Counter((r["method"], r["budget"]) for r in read_csv(report / "table1_runs.csv"))
    assert runs == {arm: P["n_runs"] for arm in ARMS}


def test_epochs_of_each_arm(report):
    "Same-final arms train final_epochs from scratch; the 'as long' arms get every epoch of the NASH pipeline."
    runs = read_csv(report / "table1_runs.csv")
    by = {(r["method"], r["budget"], int(r["seed"])): r for r in runs}
    seeds = range(P["first_seed"], P["first_seed"] + P["n_runs"])
    for seed in seeds:
        pipeline = P["seed_epochs"] + P["n_child"] * P["budgets"][-1] * P["n_epochs"] + P["final_epochs"]
        for method in ("NASH", "NASH, continued", *CLAIM2):
            assert int(by[(method, LAST, seed)]["total_epochs"]) == pipeline, (method, seed)
        for method in ("NASH", "NASH, continued", *CLAIM1):
            assert int(by[(method, LAST, seed)]["epochs"]) == P["final_epochs"], (method, seed)
        for method in CLAIM2:
            assert int(by[(method, LAST, seed)]["epochs"]) == pipeline, (method, seed)
        assert by[("NASH", LAST, seed)]["params"] == by[("NASH, continued", LAST, seed)]["params"]  # the same N*


def test_both_claims_have_paired_intervals(report):
    md = (report / "table1.md").read_text()
    claim1 = md.split("## Claim 1")[1].split("## Claim 2")[0]
    claim2 = md.split("## Claim 2")[1].split("## The length of the final training")[0]
    for section, controls in ((claim1, CLAIM1), (claim2, CLAIM2)):
        for control in controls:
            lines = [line for line in section.splitlines() if f"'{control}'" in line and "95% interval [" in line]
            assert len(lines) == 1, (control, section)
            assert f"over {P['n_runs']} paired runs" in lines[0]
        assert "**Interpretation** (assembled from the verdicts above)" in section
    assert any("NASH continued" in line and "retrained from scratch" in line and "95% interval [" in line
               for line in claim2.splitlines())


def test_final_epochs_sizing(report):
    assert (report / "table1_final_epochs.png").stat().st_size > 1000
    sizing = read_csv(report / "table1_final_epochs.csv")
    assert sorted((r["network"], int(r["epochs"])) for r in sizing) == \
        sorted((n, e) for n in ("N*", "seed") for e in P["sizing_epochs"])
    assert all(r["from_table"] == str(int(r["epochs"]) == P["final_epochs"]) for r in sizing)
    md = (report / "table1.md").read_text()
    section = md.split("## The length of the final training")[1]
    assert "table1_final_epochs.png" in section and f"final_epochs = {P['final_epochs']}" in section


def test_failures_and_header(report):
    md = (report / "table1.md").read_text()
    section = md.split("## Failures in the searches")[1]
    assert f"NASH ({P['n_runs']} runs):" in section and f"random search ({P['n_runs']} runs):" in section  # n_runs > 1
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert f"- git commit: {manifest['git_commit']}\n" in md
    for needle in ("profile: `smoke`", "| paper (full scale) |", f"reference {REF}"):
        assert needle in md, needle
