"""The reproduction pipeline: settings.ini profiles, tools/reproduce.py, and nbs/10_table1 at the smoke scale."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from reproduce import load_profile, record_commit, tree_state  # noqa: E402

PROFILES = ("smoke", "cpu", "gpu", "paper")


def notebook_parameters(nb=ROOT / "nbs" / "10_table1.ipynb") -> set:
    "Names assigned in the notebook's cell tagged `parameters`."
    import ast
    cells = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "10_table1 needs exactly one cell tagged 'parameters' (does nbdev-clean keep the tag?)"
    tree = ast.parse("".join(cells[0]["source"]))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_match_the_notebook(name):
    params = load_profile(name)
    missing = notebook_parameters() - set(params) - {"profile", "reports_dir", "data_dir", "git_commit"}
    unknown = set(params) - notebook_parameters()
    assert not missing and not unknown, f"[{name}]: missing {missing}, not parameters of 10_table1 {unknown}"
    assert params["budgets"] == sorted(params["budgets"]) and params["budget_unit"] in ("steps", "seconds")


def test_paper_profile_is_the_papers():
    p = load_profile("paper")
    assert (p["budgets"], p["budget_unit"], p["n_runs"], p["n_child"], p["n_op"], p["n_epochs"], p["seed_epochs"],
            p["final_epochs"]) == ([43200, 86400, 259200], "seconds", 5, 8, 5, 20, 20, 600)


def test_bad_profile(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[x]\ndataset = cifar10\n")  # an unquoted string is not a literal
    with pytest.raises(ValueError, match="not a Python literal"): load_profile("x", ini)
    with pytest.raises(KeyError, match="no profile"): load_profile("nope", ini)


def test_smoke_reproduction(tmp_path):
    "make reproduce PROFILE=smoke, into a temporary reports folder: tables, figure, notebook, manifest."
    out = tmp_path / "smoke"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "reproduce.py"), "--profile", "smoke", "--reports", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("table1.md", "table1.csv", "table1_progress.png", "10_table1.ipynb", "manifest.json"):
        assert (out / name).is_file(), f"{name} was not written"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["profile"] == "smoke" and manifest["wall_seconds"] > 0
    assert [n["status"] for n in manifest["notebooks"]] == ["ok"]
    rows = list(csv.DictReader((out / "table1.csv").open()))
    paper = {(r["budget"], r["params_m"], r["test_error_pct"]) for r in rows if r["source"].startswith("paper")}
    assert paper == {("0.5 GPU days", "4.9", "4.3"), ("1 GPU day", "7.9", "4.0"), ("3 GPU days", "21.2", "3.6")}
    ours = {(r["method"], r["budget"]) for r in rows if r["source"].startswith("ours")}
    assert ours == {("NASH", "1 step"), ("NASH", "2 steps"), ("seed trained as long", "2 steps"), ("random search", "2 steps")}
    md = (out / "table1.md").read_text()
    for needle in ("profile: `smoke`", "git commit:", "seeds: [0, 1]", "wall time:", "device:", "| paper (full scale) |",
                   "95% interval"):
        assert needle in md, f"table1.md lacks {needle!r}"
    assert f"- git commit: {manifest['git_commit']}\n" in md, "the table and the manifest disagree on the commit"
    assert manifest["parameters"]["git_commit"] == manifest["git_commit"]
    assert manifest["git_commit"].endswith("-dirty") == (out / "git.diff").is_file()
    assert not any((ROOT / "nbs").glob("*_executed*")), "papermill must not write into nbs/"


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
    with pytest.raises(SystemExit, match=r"refusing to run the 'cpu' profile on a dirty tree: uncommitted changes in a\.py"):
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
    monkeypatch.setattr(reproduce, "record_commit",
                        lambda profile, reports, allow_dirty=False, root=repo: record_commit(profile, reports, allow_dirty, repo))
    with pytest.raises(SystemExit, match="a.py"):
        reproduce.main(["--profile", "cpu", "--reports", str(tmp_path / "out"), "--settings", str(ROOT / "settings.ini")])
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_untracked_code_makes_the_tree_dirty(tmp_path):
    "A new notebook or module that no commit holds would run unrecorded: it counts as a change, and is in the diff."
    repo, sha = _repo(tmp_path)
    (repo / "nbs").mkdir()
    (repo / "nbs" / "11_new.ipynb").write_text("{}\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    assert tree_state(repo) == (sha, ["nbs/11_new.ipynb"])
    with pytest.raises(SystemExit, match=r"nbs/11_new\.ipynb"): record_commit("cpu", reports, root=repo)
    assert record_commit("cpu", reports, allow_dirty=True, root=repo) == f"{sha}-dirty"
    assert "+{}" in (reports / "git.diff").read_text() and "11_new.ipynb" in (reports / "git.diff").read_text()
