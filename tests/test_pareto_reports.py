"""Acceptance of issue 14 at the smoke profile: nbs/11_pareto_search and nbs/12_table2 through tools/reproduce.py.

The runner runs only those two notebooks into a reports folder that already holds another notebook's reports (a
stand-in for Table 1: a runner manifest, a file and a NASH search log), which must stay; the figures and tables
they write hold the expected rows and columns; a rerun of 12_table2 reads every finished training from its cache."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from reproduce import load_profile  # noqa: E402

P = {**load_profile("smoke"), "peer_epochs": []}  # the peer arm is checked by test_reproduce's full smoke run
NB11, NB12 = ROOT / "nbs" / "11_pareto_search.ipynb", ROOT / "nbs" / "12_table2.ipynb"
SEEDS = [P["first_seed"] + k for k in range(P["pareto_runs"])]
TABLE2_SEEDS = SEEDS[:P["table2_runs"]]


def runner(settings: Path, reports: Path, *notebooks: Path, extra=()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "reproduce.py"), "--profile", "tiny", "--settings", str(settings),
                           "--reports", str(reports), "--allow-dirty", *extra, "--notebooks", *map(str, notebooks)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def fake_table1(reports: Path):
    "What a finished Table 1 leaves: its manifest entry, a report and a NASH log whose N* is a known architecture."
    from nash_lit.arch import seed_arch
    (reports / "search_logs").mkdir(parents=True)
    (reports / "table1.md").write_text("# Table 1, kept\n")
    (reports / "manifest.json").write_text(json.dumps(dict(profile="tiny", git_commit="abc1234", status="ok", notebooks=[
        dict(notebook="nbs/10_table1.ipynb", executed="reports/tiny/10_table1.ipynb", status="ok", wall_seconds=1.0)])))
    seed, star = seed_arch((4, 8, 8)), seed_arch((4, 8, 16))
    for s in TABLE2_SEEDS:
        records = [dict(id=0, step=0, child=0, status="ok", val_error=0.9, arch=seed.to_json()),
                   dict(id=1, step=1, child=0, status="ok", val_error=0.8, arch=star.to_json()),
                   dict(id=2, step=1, child=1, status="ok", val_error=0.85, arch=seed.to_json())]
        (reports / "search_logs" / f"nash_seed{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return star


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    "The smoke profile of notebooks 11 and 12, run once for the module, with its cache in a temporary folder."
    tmp = tmp_path_factory.mktemp("pareto_reports")
    settings = tmp / "settings.ini"
    lines = [f"{k} = {v!r}" for k, v in {**P, "table2_cache": str(tmp / "cache")}.items()]
    settings.write_text("[tiny]\n" + "\n".join(lines) + "\n")
    out = tmp / "tiny"
    star = fake_table1(out)
    r = runner(settings, out, NB11, NB12)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return dict(out=out, settings=settings, star=star, tmp=tmp)


def read_csv(path): return list(csv.DictReader(path.open()))


def test_the_other_notebooks_reports_stay(reports):
    out = reports["out"]
    assert (out / "table1.md").read_text() == "# Table 1, kept\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(e["notebook"]).name for e in manifest["notebooks"]] == [NB11.name, NB12.name]
    assert all(e["status"] == "ok" and e["wall_seconds"] > 0 for e in manifest["notebooks"])
    kept = manifest["kept"]
    assert [Path(e["notebook"]).name for e in kept] == ["10_table1.ipynb"] and kept[0]["git_commit"] == "abc1234"
    for name in (NB11.name, NB12.name): assert (out / name).is_file()


def test_search_logs_and_hypervolume(reports):
    out = reports["out"]
    for sampling in ("kde", "uniform"):
        for s in SEEDS: assert (out / "search_logs" / f"pareto_{sampling}_seed{s}.jsonl").is_file()
    rows = read_csv(out / "pareto_hypervolume.csv")
    assert set(rows[0]) == {"sampling", "seed", "generation", "hypervolume"}
    assert len(rows) == 2 * len(SEEDS) * (P["n_gen"] + 1)
    for sampling in ("kde", "uniform"):
        for s in SEEDS:
            hv = [float(r["hypervolume"]) for r in rows if r["sampling"] == sampling and int(r["seed"]) == s]
            assert len(hv) == P["n_gen"] + 1 and all(b >= a - 1e-12 for a, b in zip(hv, hv[1:])), (sampling, s, hv)
            assert hv[0] > 0


def test_figures_3_and_4_and_the_tables(reports):
    out = reports["out"]
    for name in ("figure3_front_progress.png", "figure4_fronts.png", "pareto_hypervolume.png"):
        assert (out / name).stat().st_size > 10_000, f"{name} is missing or empty"
    runs = read_csv(out / "pareto_runs.csv")
    assert len(runs) == 2 * len(SEEDS) and {"sampling", "seed", "final hypervolume"} <= set(runs[0])
    decades = read_csv(out / "pareto_decades.csv")
    assert decades and set(decades[0]) == {"parameters", "kde", "uniform"}
    front = read_csv(out / "pareto_front.csv")
    assert set(front[0]) == {"id", "generation", "params", "mflops", "val_error_pct", "arch"}
    points = [(float(r["val_error_pct"]), math.log(float(r["params"]))) for r in front]
    for a in points:  # the front is non-dominated
        assert not any(b != a and b[0] <= a[0] and b[1] <= a[1] for b in points), a
    md = (out / "pareto_search.md").read_text()
    for needle in ("profile: `tiny`", "git commit:", f"seeds: {SEEDS}", "## Figure 3", "## Figure 4",
                   "final hypervolume:", "std of log10(params)", "largest trained child", "95% interval"):
        assert needle in md, needle


def test_table2_rows_and_columns(reports):
    out = reports["out"]
    table = read_csv(out / "table2.csv")
    assert set(table[0]) == {"source", "target", "method", "params", "test_error_pct", "runs", "networks"}
    ours = [r for r in table if r["source"].startswith("ours")]
    paper = [r for r in table if r["source"].startswith("paper")]
    assert len(paper) == 12 and {r["target"] for r in paper} == {"40K", "190K", "880K", "3.40M"}
    assert [(r["target"], r["method"]) for r in ours] == [(t, m) for t in ("40K", "190K")
                                                          for m in ("MobileNet", "NASNet", "Pareto-NASH")]
    assert all(int(r["runs"]) == len(TABLE2_SEEDS) and "±" in r["test_error_pct"] for r in ours)
    runs = read_csv(out / "table2_runs.csv")
    methods = {r["method"] for r in runs}
    assert methods == {"Pareto-NASH", "MobileNet", "NASNet", "Pareto-NASH seed", "NASH (Table 1)"}
    for r in runs: assert 0 <= float(r["test_error"]) <= 1 and int(float(r["params"])) > 0
    from nash_lit.arch import n_params
    nash_rows = [r for r in runs if r["method"] == "NASH (Table 1)"]
    assert len(nash_rows) == len(TABLE2_SEEDS) and all(int(float(r["params"])) == n_params(reports["star"]) for r in nash_rows)
    md = (out / "table2.md").read_text()
    for needle in ("## Verdict per size", "40K: Pareto-NASH", "190K: Pareto-NASH", "test error Pareto-NASH − MobileNet",
                   "test error Pareto-NASH − NASNet", f"({len(TABLE2_SEEDS)} paired runs)", "95% interval",
                   "| paper (full scale) |", "git commit:", "## Figure 5", "trained at commit"):
        assert needle in md, needle
    assert md.count("95% interval") >= 4  # 2 sizes x 2 rivals
    assert (out / "figure5_test_error.png").stat().st_size > 10_000


def test_continuing_a_failed_run_reads_finished_trainings_from_the_cache(reports):
    "A run whose 12_table2 failed is continued (--continue): 11's outputs come from it, every training from the cache."
    import shutil
    out, failed = reports["out"], reports["tmp"] / ".tiny-run-failed"
    shutil.copytree(out, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["notebooks"][-1]["status"], manifest["status"] = "failed", "failed"
    (failed / "manifest.json").write_text(json.dumps(manifest))
    (failed / "table2.md").unlink()
    n = len(read_csv(out / "table2_runs.csv"))
    again = reports["tmp"] / "continued"
    r = runner(reports["settings"], again, NB12, extra=("--continue", str(failed)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = read_csv(again / "table2_runs.csv")
    assert len(rows) == n and all(row["cached"] == "True" for row in rows)
    assert f"{n} trainings, {n} read from the cache" in (again / "table2.md").read_text()
    assert read_csv(again / "table2.csv") == read_csv(out / "table2.csv"), "the same trainings give the same table"
    manifest = json.loads((again / "manifest.json").read_text())
    assert [Path(e["notebook"]).name for e in manifest["kept"]] == ["10_table1.ipynb", NB11.name]
    assert [Path(e["notebook"]).name for e in manifest["notebooks"]] == [NB12.name]
    assert all("parameters" in e for e in manifest["kept"][1:] + manifest["notebooks"])
    assert (again / "pareto_search.md").is_file() and (again / "table1.md").is_file()


def test_a_partial_run_that_would_leave_later_reports_stale_is_refused(reports):
    "Rerunning 11 alone would keep a 12_table2 computed from the old fronts: refused before anything runs."
    before = (reports["out"] / "manifest.json").read_text()
    r = runner(reports["settings"], reports["out"], NB11)
    assert r.returncode != 0 and "stale" in r.stderr and "12_table2.ipynb" in r.stderr, r.stderr[-2000:]
    assert (reports["out"] / "manifest.json").read_text() == before


def test_a_partial_run_on_another_profiles_reports_is_refused(reports, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(dict(profile="cpu", git_commit="abc1234", notebooks=[])))
    r = runner(reports["settings"], other, NB12)
    assert r.returncode != 0 and "holds the 'cpu' profile's reports, not 'tiny'" in r.stderr, r.stderr[-2000:]
