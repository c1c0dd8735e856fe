"""The reproduction pipeline: settings.ini profiles, tools/reproduce.py, and nbs/30_table1 at the smoke scale."""

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from reproduce import carry_over, check_target, describe_failure, load_profile, publish, record_commit, tree_state  # noqa: E402

PROFILES = ("smoke", "cpu", "gpu", "paper")


REPRODUCTIONS = sorted((ROOT / "nbs").glob("3[0-9]_*.ipynb"))
RUNNER_GIVES = {"profile", "reports_dir", "data_dir", "git_commit"}  # passed by tools/reproduce.py, not by a profile


def notebook_parameters(nb: Path) -> set:
    "Names assigned in the notebook's cell tagged `parameters`."
    import ast

    cells = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{nb.name} needs exactly one cell tagged 'parameters' (does nbdev-clean keep the tag?)"
    tree = ast.parse("".join(cells[0]["source"]))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_match_the_notebooks(name):
    "Every profile sets each reproduction notebook's parameters, and nothing that no notebook reads."
    params = load_profile(name)
    assert [nb.name for nb in REPRODUCTIONS] == [
        "30_table1.ipynb",
        "31_pareto_search.ipynb",
        "32_table2.ipynb",
        "33_inheritance.ipynb",
    ]
    every = set()
    for nb in REPRODUCTIONS:
        wanted = notebook_parameters(nb)
        every |= wanted
        missing = wanted - set(params) - RUNNER_GIVES
        assert not missing, f"[{name}] lacks {missing}, parameters of {nb.name}"
    unknown = set(params) - every
    assert not unknown, f"[{name}]: {unknown} is a parameter of no reproduction notebook"
    assert params["budgets"] == sorted(params["budgets"]) and params["budget_unit"] in ("steps", "seconds")
    assert params["table2_runs"] <= params["pareto_runs"], "Table 2's run k trains the front of search seed k"
    if name != "smoke":
        assert params["pareto_runs"] >= 3, "one pair of runs decides nothing (issue 14)"


def test_paper_profile_is_the_papers():
    p = load_profile("paper")
    assert (
        p["budgets"],
        p["budget_unit"],
        p["n_runs"],
        p["n_child"],
        p["n_op"],
        p["n_epochs"],
        p["seed_epochs"],
        p["final_epochs"],
    ) == ([43200, 86400, 259200], "seconds", 5, 8, 5, 20, 20, 600)


def test_bad_profile(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[x]\ndataset = cifar10\n")  # an unquoted string is not a literal
    with pytest.raises(ValueError, match="not a Python literal"):
        load_profile("x", ini)
    with pytest.raises(KeyError, match="no profile"):
        load_profile("nope", ini)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """make reproduce PROFILE=smoke once for the module, into reports/smoke/ (CI's output, ignored by git), with
    32_table2's cache in a temporary folder (the profile keeps none); every test of the reports below reads it."""
    git = (ROOT / ".git").exists()
    status = lambda: (
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", "reports"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    before = status() if git else None
    tmp = tmp_path_factory.mktemp("smoke")
    settings = tmp / "settings.ini"
    params = {**load_profile("smoke"), "table2_cache": str(tmp / "cache")}
    settings.write_text("[smoke]\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items()))
    r = reproduce("--profile", "smoke", "--settings", settings, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return dict(
        out=ROOT / "reports" / "smoke",
        settings=settings,
        tmp=tmp,
        params=params,
        git=git,
        git_status_unchanged=(status() == before) if git else True,
    )


def test_smoke_reproduction(smoke):
    "Every reproduction notebook ran at the smoke profile: tables, figures, executed notebooks, manifest."
    out = smoke["out"]
    if smoke["git"]:
        tracked = subprocess.run(["git", "ls-files", "--", "reports/smoke"], cwd=ROOT, capture_output=True, text=True)
        assert tracked.stdout == "", "reports/smoke/ is still committed: git rm -r --cached reports/smoke"
        ignored = subprocess.run(["git", "check-ignore", "-q", "reports/smoke/manifest.json"], cwd=ROOT)
        assert ignored.returncode == 0, "reports/smoke/ must be in .gitignore"
    assert not list(out.parent.glob(".smoke-run-*")), "the run's folder was not moved into place"
    for name in (
        "table1.md",
        "table1.csv",
        "table1_progress.png",
        "table1_networks.png",
        "table2_networks.png",
        "30_table1.ipynb",
        "manifest.json",
        "pareto_search.md",
        "31_pareto_search.ipynb",
        "table2.md",
        "32_table2.ipynb",
        "inheritance.md",
        "33_inheritance.ipynb",
    ):
        assert (out / name).is_file(), f"{name} was not written"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["profile"] == "smoke" and manifest["wall_seconds"] > 0
    assert [n["status"] for n in manifest["notebooks"]] == ["ok"] * len(REPRODUCTIONS) and manifest["kept"] == []
    assert manifest["notebooks"][0]["executed"] == "reports/smoke/30_table1.ipynb", "the manifest names where it lives"
    rows = list(csv.DictReader((out / "table1.csv").open()))
    paper = {(r["budget"], r["params_m"], r["test_error_pct"]) for r in rows if r["source"].startswith("paper")}
    assert paper == {("0.5 GPU days", "4.9", "4.3"), ("1 GPU day", "7.9", "4.0"), ("3 GPU days", "21.2", "3.6")}
    ours = {(r["method"], r["budget"]) for r in rows if r["source"].startswith("ours")}
    assert ours == {
        ("NASH", "1 step"),
        ("NASH", "2 steps"),
        ("NASH, continued", "2 steps"),
        ("seed, same final training", "2 steps"),
        ("seed, trained as long", "2 steps"),
        ("random search", "2 steps"),
        ("TPE", "2 steps"),
        ("resnet-8, same final training", "2 steps"),
        ("resnet-8, trained as long", "2 steps"),
    }
    md = (out / "table1.md").read_text()
    for needle in (
        "profile: `smoke`",
        "git commit:",
        "seeds: [0, 1]",
        "wall time:",
        "device:",
        "| paper (full scale) |",
        "95% interval",
        "from 'TPE'",
        "- TPE (2 runs): ",
        "![The seed, N*, random search's and TPE's picks]",
    ):
        assert needle in md, f"table1.md lacks {needle!r}"
    for seed in (0, 1):  # TPE trained at most the images NASH's search trained, and most of them
        spent = {
            name: sum(
                (r.get("train_images") or 0) + (r.get("recovery_images") or 0)
                for r in map(json.loads, (out / "search_logs" / f"{name}_seed{seed}.jsonl").read_text().splitlines())
            )
            for name in ("nash", "tpe")
        }
        assert 0.5 * spent["nash"] < spent["tpe"] <= spent["nash"], spent
    assert f"- git commit: {manifest['git_commit']}\n" in md, "the table and the manifest disagree on the commit"
    assert manifest["parameters"]["git_commit"] == manifest["git_commit"]
    assert manifest["git_commit"].endswith("-dirty") == (out / "git.diff").is_file()
    assert not any((ROOT / "nbs").glob("*_executed*")), "papermill must not write into nbs/"
    assert smoke["git_status_unchanged"], "a smoke reproduction changed what git sees under reports/"


def reproduce(*args, timeout=600) -> subprocess.CompletedProcess:
    "tools/reproduce.py in a subprocess, one torch thread, its output captured."
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "reproduce.py"), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def hashes(folder: Path) -> dict:
    "relative path -> SHA-256 of every file under `folder`."
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def committed_looking_reports(folder: Path) -> dict:
    "A reports folder as a successful run leaves it (manifest, table, notebook, a search log); its hashes."
    (folder / "search_logs").mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps(dict(profile="tiny", git_commit="abc1234", status="ok", notebooks=[]))
    )
    (folder / "table1.md").write_text("# Table 1\n| a | b |\n")
    (folder / "30_table1.ipynb").write_text("{}\n")
    (folder / "search_logs" / "nash_seed0.jsonl").write_text('{"id": 0}\n')
    return hashes(folder)


def test_a_partial_run_over_reports_of_renamed_notebooks_is_refused(tmp_path):
    "Reports made by notebooks since renamed (chapters renumbered) are not carried into a partial run under old names."
    reports = tmp_path / "reports"
    committed_looking_reports(reports)
    entry = dict(notebook="nbs/10_table1.ipynb", status="ok", git_commit="abc1234", parameters={})
    manifest = json.loads((reports / "manifest.json").read_text())
    (reports / "manifest.json").write_text(json.dumps({**manifest, "notebooks": [entry]}))
    with pytest.raises(SystemExit, match=r"nbs/10_table1\.ipynb.*no longer notebooks.*run every notebook"):
        carry_over(reports, tmp_path / "run", [ROOT / "nbs" / "32_table2.ipynb"], "tiny")


def test_missing_data_root_prints_why_and_keeps_the_reports(tmp_path):
    "A reproduction that fails (no CIFAR-10 under the data root) says so on the terminal and replaces nothing."
    ini = tmp_path / "settings.ini"
    tiny = {**load_profile("smoke"), "dataset": "cifar10", "train_size": 64, "val_size": 32, "test_size": 32}
    ini.write_text("[tiny]\n" + "".join(f"{k} = {v!r}\n" for k, v in tiny.items()))
    reports = tmp_path / "reports" / "tiny"
    before = committed_looking_reports(reports)
    (tmp_path / "a_file").write_text("")
    data = tmp_path / "a_file" / "cifar"  # under a file: no folder can be made there, so nothing is downloaded
    r = reproduce("--profile", "tiny", "--settings", ini, "--data", data, "--reports", reports, "--allow-dirty")
    shown = r.stdout + r.stderr
    assert r.returncode == 1, shown[-3000:]
    assert f"FileNotFoundError: CIFAR-10 not found under the data root {data.resolve()}" in r.stderr, r.stderr[-3000:]
    assert "\x1b[" not in r.stderr, "colour codes must be stripped"
    assert hashes(reports) == before, "a failed run must leave the reports folder byte for byte"
    runs = list(reports.parent.glob(".tiny-run-*"))
    assert len(runs) == 1 and f"This run's folder is kept: {runs[0]}" in r.stderr
    executed = runs[0] / "30_table1.ipynb"
    assert f"the executed notebook, with the failing cell's output: {executed}" in r.stderr and executed.is_file()
    assert not list(reports.parent.glob(".tiny-old-*"))
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["parameters"]["reports_dir"] == str(runs[0])
    [entry] = manifest["notebooks"]
    assert entry["status"] == "failed" and entry["error"]["ename"] == "FileNotFoundError"
    assert entry["error"]["executed"] == str(executed)
    assert "CIFAR-10 not found under the data root" in entry["error"]["evalue"]
    tb = entry["error"]["traceback"]
    assert "Traceback" in tb and tb.splitlines()[-1].startswith("FileNotFoundError: CIFAR-10 not found"), tb[-2000:]


def test_publish_replaces_the_reports_folder(tmp_path):
    "The finished run's folder becomes the reports folder; nothing of the old one, and no run folder, is left."
    target, run = tmp_path / "cpu", tmp_path / ".cpu-run-1"
    committed_looking_reports(target)
    (target / "git.diff").write_text("stale")
    run.mkdir()
    (run / "manifest.json").write_text("new")
    publish(run, target)
    assert hashes(target) == {"manifest.json": hashlib.sha256(b"new").hexdigest()}
    assert [p.name for p in tmp_path.iterdir()] == ["cpu"]
    run.mkdir()
    (run / "table1.md").write_text("first")
    publish(run, tmp_path / "new")  # no reports folder yet
    assert (tmp_path / "new" / "table1.md").read_text() == "first" and not run.exists()


def test_publish_puts_the_old_reports_back_when_the_move_fails(tmp_path, monkeypatch):
    target, run = tmp_path / "cpu", tmp_path / ".cpu-run-1"
    before = committed_looking_reports(target)
    run.mkdir()
    real = Path.rename

    def rename(self, dest):
        if self == run:
            raise OSError("disk trouble")
        return real(self, dest)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="disk trouble"):
        publish(run, target)
    assert hashes(target) == before and run.is_dir() and not list(tmp_path.glob(".cpu-old-*"))


def test_reports_folder_that_must_not_be_replaced(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit, match="is a file"):
        check_target(tmp_path / "f")
    with pytest.raises(SystemExit, match="name a folder of its own"):
        check_target(ROOT)
    with pytest.raises(SystemExit, match="name a folder of its own"):
        check_target(ROOT.parent)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("")
    with pytest.raises(SystemExit, match="no manifest.json written by this runner"):
        check_target(tmp_path / "mine")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "manifest.json").write_text('{"name": "my web app", "icons": []}')  # a manifest, not ours
    with pytest.raises(SystemExit, match="no manifest.json written by this runner"):
        check_target(tmp_path / "app")
    check_target(tmp_path / "new")  # new, empty, or a reports folder: fine
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty")
    committed_looking_reports(tmp_path / "reports")
    check_target(tmp_path / "reports")


def test_failure_description_names_the_cell_and_keeps_everything(tmp_path):
    "A failing cell: exception and traceback end on the terminal, colour codes stripped; the full traceback kept."
    from papermill.exceptions import PapermillExecutionError

    frames = [f"\x1b[0;32mFile\x1b[0m /lib/mod.py:{k}, in \x1b[0;36mf{k}\x1b[0m\n    x = {'y' * 80}" for k in range(60)]
    tb = ["\x1b[0;31m-------\x1b[0m", *frames, "\x1b[0;31mValueError\x1b[0m: lr_max must be > 0"]
    e = PapermillExecutionError(6, 3, "train()", "ValueError", "lr_max must be > 0", tb)
    executed = tmp_path / "30_table1.ipynb"
    executed.write_text("{}")
    text, record = describe_failure(e, executed)
    assert "\x1b" not in text and "\x1b" not in record["traceback"]
    assert "30_table1.ipynb failed in cell In [3]:" in text and "  ValueError: lr_max must be > 0" in text
    assert text.count("/lib/mod.py") < 15 and "/lib/mod.py:59" in text, "the end of the traceback, not all of it"
    assert f"the executed notebook, with the failing cell's output: {executed}" in text
    assert len(record["traceback"]) > 5000 and "/lib/mod.py:0," in record["traceback"], "the manifest keeps it all"
    assert (record["ename"], record["exec_count"], record["executed"]) == ("ValueError", 3, str(executed))
    text, record = describe_failure(RuntimeError("Kernel died"), tmp_path / "never.ipynb")
    assert "never.ipynb failed: RuntimeError: Kernel died" in text and "no executed notebook was written" in text
    assert record["executed"] is None and "RuntimeError: Kernel died" in record["traceback"]


def _repo(tmp_path):
    "A git repository with one committed file."
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
    git("init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return repo, git("rev-parse", "--short", "HEAD").stdout.decode().strip()


def test_clean_tree_records_the_commit(tmp_path):
    repo, sha = _repo(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "git.diff").write_text("stale")
    (repo / "untracked.txt").write_text("scratch")  # untracked files outside the code do not make the tree dirty
    assert tree_state(repo) == (sha, [])
    assert record_commit("cpu", reports, root=repo) == sha
    assert not (reports / "git.diff").exists(), "a stale diff would contradict the manifest"


def test_dirty_tree_is_refused_or_recorded_with_its_diff(tmp_path):
    repo, sha = _repo(tmp_path)
    (repo / "a.py").write_text("x = 2\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    with pytest.raises(
        SystemExit, match=r"refusing to run the 'cpu' profile on a dirty tree: uncommitted changes in a\.py"
    ):
        record_commit("cpu", reports, root=repo)
    assert not (reports / "git.diff").exists()
    assert record_commit("cpu", reports, allow_dirty=True, root=repo) == f"{sha}-dirty"
    assert "+x = 2" in (reports / "git.diff").read_text()
    assert record_commit("smoke", reports, root=repo) == f"{sha}-dirty"  # smoke runs anywhere, and says so


def test_dirty_refusal_from_the_command_line(tmp_path, monkeypatch):
    "main() refuses before any notebook runs (checked against a dirty scratch repository)."
    import reproduce

    repo, _ = _repo(tmp_path)
    (repo / "a.py").write_text("x = 3\n")
    monkeypatch.setattr(reproduce, "ROOT", repo)
    monkeypatch.setattr(
        reproduce,
        "record_commit",
        lambda profile, reports, allow_dirty=False, root=repo: record_commit(profile, reports, allow_dirty, repo),
    )
    with pytest.raises(SystemExit, match="a.py"):
        reproduce.main(
            ["--profile", "cpu", "--reports", str(tmp_path / "out"), "--settings", str(ROOT / "settings.ini")]
        )
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out-run-*")), "a refused run leaves nothing"


def test_untracked_code_makes_the_tree_dirty(tmp_path):
    "A new notebook or module that no commit holds would run unrecorded: it counts as a change, and is in the diff."
    repo, sha = _repo(tmp_path)
    (repo / "nbs").mkdir()
    (repo / "nbs" / "11_new.ipynb").write_text("{}\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    assert tree_state(repo) == (sha, ["nbs/11_new.ipynb"])
    with pytest.raises(SystemExit, match=r"nbs/11_new\.ipynb"):
        record_commit("cpu", reports, root=repo)
    assert record_commit("cpu", reports, allow_dirty=True, root=repo) == f"{sha}-dirty"
    assert "+{}" in (reports / "git.diff").read_text() and "11_new.ipynb" in (reports / "git.diff").read_text()


# The reports of 31_pareto_search, 32_table2 and 33_inheritance, from the module's smoke reproduction (issues 14, 20).


def read_csv(path):
    return list(csv.DictReader(path.open()))


def smoke_seeds(smoke, runs: str = "pareto_runs") -> list:
    p = smoke["params"]
    return [p["first_seed"] + k for k in range(p[runs])]


def test_search_logs_and_hypervolume(smoke):
    out, p, seeds = smoke["out"], smoke["params"], smoke_seeds(smoke)
    for sampling in ("kde", "uniform", *(f"nsga2_e{e}" for e in p["peer_epochs"])):
        for s in seeds:
            assert (out / "search_logs" / f"pareto_{sampling}_seed{s}.jsonl").is_file(), (sampling, s)
    rows = read_csv(out / "pareto_hypervolume.csv")
    assert set(rows[0]) == {"sampling", "seed", "generation", "hypervolume"}
    assert len(rows) == 2 * len(seeds) * (p["n_gen"] + 1)
    for sampling in ("kde", "uniform"):
        for s in seeds:
            hv = [float(r["hypervolume"]) for r in rows if r["sampling"] == sampling and int(r["seed"]) == s]
            assert len(hv) == p["n_gen"] + 1 and all(b >= a - 1e-12 for a, b in zip(hv, hv[1:])), (sampling, s, hv)
            assert hv[0] > 0


def test_figures_3_and_4_and_the_tables(smoke):
    out, seeds = smoke["out"], smoke_seeds(smoke)
    for name in ("figure3_front_progress.png", "figure4_fronts.png", "pareto_hypervolume.png", "pareto_vs_nsga2.png"):
        assert (out / name).stat().st_size > 10_000, f"{name} is missing or empty"
    runs = read_csv(out / "pareto_runs.csv")
    assert len(runs) == 2 * len(seeds) and {"sampling", "seed", "final hypervolume"} <= set(runs[0])
    decades = read_csv(out / "pareto_decades.csv")
    assert decades and set(decades[0]) == {"parameters", "kde", "uniform"}
    front = read_csv(out / "pareto_front.csv")
    assert set(front[0]) == {"id", "generation", "params", "mflops", "val_error_pct", "arch"}
    points = [(float(r["val_error_pct"]), math.log(float(r["params"]))) for r in front]
    for a in points:  # the front is non-dominated
        assert not any(b != a and b[0] <= a[0] and b[1] <= a[1] for b in points), a
    md = (out / "pareto_search.md").read_text()
    for needle in (
        "profile: `smoke`",
        "git commit:",
        f"seeds: {seeds}",
        "## Figure 3",
        "## Figure 4",
        "final hypervolume:",
        "std of log10(params)",
        "largest trained child",
        "95% interval",
        "Pareto-NASH (kde) against NSGA-II",
    ):
        assert needle in md, needle


def test_table2_rows_and_columns(smoke):
    from nash_lit.arch import Arch, n_params
    from nash_lit.hill_climbing import best_child

    out, seeds = smoke["out"], smoke_seeds(smoke, "table2_runs")
    table = read_csv(out / "table2.csv")
    assert set(table[0]) == {"source", "target", "method", "params", "test_error_pct", "runs", "networks"}
    ours = [r for r in table if r["source"].startswith("ours")]
    paper = [r for r in table if r["source"].startswith("paper")]
    assert len(paper) == 12 and {r["target"] for r in paper} == {"40K", "190K", "880K", "3.40M"}
    assert [(r["target"], r["method"]) for r in ours] == [
        (t, m) for t in ("40K", "190K") for m in ("MobileNet", "NASNet", "NSGA-II", "Pareto-NASH")
    ]
    assert all(int(r["runs"]) == len(seeds) and "±" in r["test_error_pct"] for r in ours)
    runs = read_csv(out / "table2_runs.csv")
    assert {r["method"] for r in runs} == {
        "Pareto-NASH",
        "MobileNet",
        "NASNet",
        "NSGA-II",
        "Pareto-NASH seed",
        "NASH (Table 1)",
    }
    peer = f"nsga2_e{smoke['params']['peer_epochs'][-1]}"
    for s in seeds:  # NSGA-II's rows: the member of its final front (brute force here) nearest each target, by ratio
        log = [
            json.loads(line) for line in (out / "search_logs" / f"pareto_{peer}_seed{s}.jsonl").read_text().splitlines()
        ]
        ok = [r for r in log if r["status"] == "ok"]
        points = [(r["val_error"], *r["objectives"]) for r in ok]
        front = [r for r, p in zip(ok, points) if not any(all(a <= b for a, b in zip(q, p)) and q != p for q in points)]
        trained = sorted(int(float(r["params"])) for r in runs if r["method"] == "NSGA-II" and int(r["seed"]) == s)
        wanted = sorted(
            min((r["params"] for r in front), key=lambda n: abs(math.log(n / t))) for t in (40_000, 190_000)
        )
        assert trained == wanted, (s, trained, wanted)
    for r in runs:
        assert 0 <= float(r["test_error"]) <= 1 and int(float(r["params"])) > 0
    nash_rows = {int(r["seed"]): int(float(r["params"])) for r in runs if r["method"] == "NASH (Table 1)"}
    for s in seeds:  # N* of Table 1's run: the best child of its last step, read from 30_table1's log
        records = [json.loads(line) for line in (out / "search_logs" / f"nash_seed{s}.jsonl").read_text().splitlines()]
        last = max(r["step"] for r in records)
        assert nash_rows[s] == n_params(Arch.from_json(best_child([r for r in records if r["step"] == last])["arch"]))
    md = (out / "table2.md").read_text()
    for needle in (
        "## Verdict per size",
        "40K: Pareto-NASH",
        "190K: Pareto-NASH",
        "test error Pareto-NASH − MobileNet",
        "test error Pareto-NASH − NASNet",
        "test error Pareto-NASH − NSGA-II",
        f"({len(seeds)} paired runs)",
        "95% interval",
        "Against the peer trained from scratch",
        "(table2_networks.png)",
        "| paper (full scale) |",
        "git commit:",
        "## Figure 5",
        "trained at commit",
    ):
        assert needle in md, needle
    assert md.count("95% interval") >= 6  # 2 sizes x 3 rivals
    assert (out / "figure5_test_error.png").stat().st_size > 10_000


def test_inheritance_report(smoke):
    "33_inheritance: every arm and seed searched within the same images trained; a verdict per arm against its peer."
    out, p, seeds = smoke["out"], smoke["params"], smoke_seeds(smoke)
    runs = read_csv(out / "inheritance_runs.csv")
    arms = p["inheritance_arms"]
    assert sorted((r["arm"], int(r["seed"])) for r in runs) == sorted((a, s) for a in arms for s in seeds)
    for r in runs:
        assert 0.5 * p["inheritance_images"] < float(r["images"]) <= p["inheritance_images"], r
        log = out / "search_logs" / f"inheritance_{r['arm'].replace(' ', '_')}_seed{r['seed']}.jsonl"
        assert len(log.read_text().splitlines()) >= int(float(r["trained"])), log
        assert int(float(r["trained"])) >= 1
    table = {r["arm"]: r for r in read_csv(out / "inheritance.csv")}
    assert set(table) == set(arms)
    for column in ("against the peer at equal images", "against the peer at the budget"):
        assert table["defaults"][column].endswith("vs nsga2_e1") and table["nash"][column].endswith("vs tpe_e1")
        assert table["nsga2_e1"][column] == ""
    assert "vs" not in table["tpe_e1"]["against the control"]
    # at equal images, recomputed from the logs: NSGA-II's trials in id order while their images fit in the arm's
    from nash_lit.driver import Cost
    from nash_lit.front import hypervolume
    from nash_lit.pareto import ParetoConfig

    differences = []
    for seed in seeds:
        own = next(r for r in runs if r["arm"] == "defaults" and int(r["seed"]) == seed)
        peer = [json.loads(line) for line in (out / "search_logs" / f"inheritance_nsga2_e1_seed{seed}.jsonl").open()]
        peer.sort(key=lambda r: r["id"])
        fit = [r for k, r in enumerate(peer) if Cost.of(peer[: k + 1]).total.images <= float(own["images"])]
        points = [(r["val_error"], *r["objectives"]) for r in fit if r["status"] == "ok"]
        peer_hv = hypervolume(points, ParetoConfig().reference) if points else 0.0
        differences.append(float(own["hypervolume"]) - peer_hv)
    shown = float(table["defaults"]["against the peer at equal images"].split(":")[1].split()[0])
    assert abs(shown - sum(differences) / len(differences)) < 1e-3, (shown, differences)
    for name in ("inheritance.png",):
        assert (out / name).stat().st_size > 10_000
    md = (out / "inheritance.md").read_text()
    assert "profile: `smoke`" in md and f"seeds: {seeds}" in md and f"{p['inheritance_images']:,} images" in md


def tiny_runner(smoke, reports: Path, *notebooks: str, extra=()) -> subprocess.CompletedProcess:
    return reproduce(
        "--profile",
        "smoke",
        "--settings",
        smoke["settings"],
        "--reports",
        reports,
        "--allow-dirty",
        *extra,
        "--notebooks",
        *(ROOT / "nbs" / nb for nb in notebooks),
        timeout=900,
    )


def test_continuing_a_failed_run_reads_finished_trainings_from_the_cache(smoke):
    "A run whose 32_table2 (and what follows) failed is continued: 30 and 31 stay, every training comes from the cache."
    import shutil

    out, failed = smoke["out"], smoke["tmp"] / ".smoke-run-failed"
    shutil.copytree(out, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    for entry in manifest["notebooks"][2:]:
        entry["status"] = "failed"
    manifest["status"] = "failed"
    (failed / "manifest.json").write_text(json.dumps(manifest))
    (failed / "table2.md").unlink()
    n = len(read_csv(out / "table2_runs.csv"))
    again = smoke["tmp"] / "continued"
    r = tiny_runner(smoke, again, "32_table2.ipynb", extra=("--continue", failed))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = read_csv(again / "table2_runs.csv")
    assert len(rows) == n and all(row["cached"] == "True" for row in rows)
    assert f"{n} trainings, {n} read from the cache" in (again / "table2.md").read_text()
    assert read_csv(again / "table2.csv") == read_csv(out / "table2.csv"), "the same trainings give the same table"
    manifest = json.loads((again / "manifest.json").read_text())
    assert [Path(e["notebook"]).name for e in manifest["kept"]] == ["30_table1.ipynb", "31_pareto_search.ipynb"]
    assert [Path(e["notebook"]).name for e in manifest["notebooks"]] == ["32_table2.ipynb"]
    assert all("parameters" in e and "git_commit" in e for e in manifest["kept"] + manifest["notebooks"])
    assert (again / "pareto_search.md").read_text() == (out / "pareto_search.md").read_text()
    assert (again / "table1.md").read_text() == (out / "table1.md").read_text()


def test_a_partial_run_that_would_leave_later_reports_stale_is_refused(smoke):
    "Rerunning 31 alone would keep a 32_table2 computed from the old fronts (and 33): refused before anything runs."
    before = (smoke["out"] / "manifest.json").read_text()
    r = tiny_runner(smoke, smoke["out"], "31_pareto_search.ipynb")
    assert r.returncode != 0 and "stale" in r.stderr and "32_table2.ipynb" in r.stderr, r.stderr[-2000:]
    assert (smoke["out"] / "manifest.json").read_text() == before
    assert not list(smoke["out"].parent.glob(".*-run-*")), "a refused run leaves no run folder behind"


def test_a_partial_run_on_another_profiles_reports_is_refused(smoke, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(dict(profile="cpu", git_commit="abc1234", notebooks=[])))
    r = tiny_runner(smoke, other, "32_table2.ipynb")
    assert r.returncode != 0 and "holds the 'cpu' profile's reports, not 'smoke'" in r.stderr, r.stderr[-2000:]


SMOKE = load_profile("smoke")  # Table 1's tests (issue 12): every arm, its epochs, both claims, the sizing, the header
LAST = f"{SMOKE['budgets'][-1]} steps"
REF = SMOKE["reference"]
CLAIM1 = ["seed, same final training", "random search", "TPE", f"{REF}, same final training"]
CLAIM2 = ["seed, trained as long", f"{REF}, trained as long"]
ARMS = {("NASH", f"{b} step{'s' if b != 1 else ''}") for b in SMOKE["budgets"]} | {
    (m, LAST) for m in ["NASH, continued", *CLAIM1, *CLAIM2]
}


@pytest.fixture(scope="module")
def report(smoke):
    "Table 1's reports from the module's one smoke reproduction."
    return smoke["out"]


def test_smoke_profile_is_what_this_test_expects():
    assert SMOKE["budget_unit"] == "steps" and SMOKE["controls"] and SMOKE["reference"] in ("resnet-8", "resnet-20")
    assert SMOKE["final_epochs"] in SMOKE["sizing_epochs"]  # the sizing reuses the table's rows at final_epochs


def test_every_arm_has_its_row(report):
    rows = read_csv(report / "table1.csv")
    ours = [(r["method"], r["budget"]) for r in rows if r["source"].startswith("ours")]
    assert sorted(ours) == sorted(ARMS), set(ours) ^ ARMS
    assert all(r["runs"] == str(SMOKE["n_runs"]) for r in rows if r["source"].startswith("ours"))
    runs = Counter((r["method"], r["budget"]) for r in read_csv(report / "table1_runs.csv"))
    assert runs == {arm: SMOKE["n_runs"] for arm in ARMS}


def test_epochs_of_each_arm(report):
    "Same-final arms train final_epochs from scratch; the 'as long' arms get every epoch of the NASH pipeline."
    runs = read_csv(report / "table1_runs.csv")
    by = {(r["method"], r["budget"], int(r["seed"])): r for r in runs}
    seeds = range(SMOKE["first_seed"], SMOKE["first_seed"] + SMOKE["n_runs"])
    for seed in seeds:
        pipeline = (
            SMOKE["seed_epochs"] + SMOKE["n_child"] * SMOKE["budgets"][-1] * SMOKE["n_epochs"] + SMOKE["final_epochs"]
        )
        for method in ("NASH", "NASH, continued", *CLAIM2):
            assert int(by[(method, LAST, seed)]["total_epochs"]) == pipeline, (method, seed)
        for method in ("NASH", "NASH, continued", *CLAIM1):
            assert int(by[(method, LAST, seed)]["epochs"]) == SMOKE["final_epochs"], (method, seed)
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
            assert f"over {SMOKE['n_runs']} paired runs" in lines[0]
        assert "**Interpretation** (assembled from the verdicts above)" in section
    assert any(
        "NASH continued" in line and "retrained from scratch" in line and "95% interval [" in line
        for line in claim2.splitlines()
    )


def test_final_epochs_sizing(report):
    assert (report / "table1_final_epochs.png").stat().st_size > 1000
    sizing = read_csv(report / "table1_final_epochs.csv")
    assert sorted((r["network"], int(r["epochs"])) for r in sizing) == sorted(
        (n, e) for n in ("N*", "seed") for e in SMOKE["sizing_epochs"]
    )
    assert all(r["from_table"] == str(int(r["epochs"]) == SMOKE["final_epochs"]) for r in sizing)
    md = (report / "table1.md").read_text()
    section = md.split("## The length of the final training")[1]
    assert "table1_final_epochs.png" in section and f"final_epochs = {SMOKE['final_epochs']}" in section


def test_failures_and_header(report):
    md = (report / "table1.md").read_text()
    section = md.split("## Failures in the searches")[1]
    assert (
        f"NASH ({SMOKE['n_runs']} runs):" in section and f"random search ({SMOKE['n_runs']} runs):" in section
    )  # n_runs > 1
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert f"- git commit: {manifest['git_commit']}\n" in md
    for needle in ("profile: `smoke`", "| paper (full scale) |", f"reference {REF}"):
        assert needle in md, needle
