"""Run the reproduction notebooks (nbs/1*_*.ipynb) of one settings.ini profile with papermill.

    python tools/reproduce.py --profile cpu [--data DIR] [--reports DIR] [--notebooks nbs/10_table1.ipynb ...]
                              [--allow-dirty]

Each profile of settings.ini is a set of papermill parameters (Python literals, read with
ast.literal_eval, never eval). Executed notebooks go to reports/<profile>/ (never into nbs/), beside
what they write (tables, figures) and a run manifest, manifest.json.

The commit is computed once, here, and passed to every notebook as the papermill parameter
`git_commit` and written into manifest.json, so a table and its manifest never disagree. A
reproduction other than `smoke` refuses to run on a tree with uncommitted changes to tracked files
or untracked files under nbs/, nash_lit/ or tools/, naming them; with --allow-dirty it runs, records the commit as `<sha>-dirty` and writes `git diff HEAD`
to <reports>/git.diff. (A dirty `smoke` run does the same without asking.)
"""
from __future__ import annotations

import argparse
import ast
import configparser
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_profile(name: str,  # the [section] of settings.ini
                 path=ROOT / "settings.ini",  # the profiles file
                 ) -> dict:
    "The papermill parameters of one profile: every value a Python literal."
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the parameters' case
    if not parser.read(path): raise FileNotFoundError(f"no profiles file at {path}")
    if name not in parser:
        raise KeyError(f"no profile [{name}] in {path}; profiles: {parser.sections()}")
    params = {}
    for key, text in parser[name].items():
        try: params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"[{name}] {key} = {text!r} is not a Python literal (strings need quotes)") from e
    return params


def _git(root: Path, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


CODE = ("nbs", "nash_lit", "tools")  # where an untracked file changes what a reproduction runs


def _untracked_code(root: Path) -> list[str]:
    "Untracked, not ignored files under CODE: a new notebook or module runs without being in any commit."
    lines = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *CODE).splitlines()
    return [line[3:] for line in lines if line.startswith("?? ")]


def tree_state(root: Path = ROOT) -> tuple[str, list[str]]:
    "(short commit of HEAD or 'unknown', files with uncommitted changes: tracked ones, and untracked code)."
    try:
        sha = _git(root, "rev-parse", "--short", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--untracked-files=no").splitlines()
        untracked = _untracked_code(root)
    except (OSError, subprocess.CalledProcessError): return "unknown", []
    return sha, [line[3:].split(" -> ")[-1] for line in status if line.strip()] + untracked


def _diff(root: Path) -> str:
    "`git diff HEAD`, followed by each untracked code file as an addition."
    parts = [_git(root, "diff", "HEAD")]
    for path in _untracked_code(root):  # --no-index exits 1 when the files differ, which they do
        parts.append(subprocess.run(["git", "diff", "--no-index", "/dev/null", path], cwd=root,
                                    capture_output=True, text=True).stdout)
    return "".join(parts)


def record_commit(profile: str,  # the profile being reproduced
                  reports: Path,  # its reports folder
                  allow_dirty: bool = False,  # run a non-smoke profile on a dirty tree
                  root: Path = ROOT,  # the checkout
                  ) -> str:
    "The commit to record: the clean HEAD, or `<sha>-dirty` with the diff written to reports/git.diff."
    sha, dirty = tree_state(root)
    diff_path = Path(reports) / "git.diff"
    if not dirty:
        diff_path.unlink(missing_ok=True)  # a stale diff from an earlier dirty run would contradict the manifest
        return sha
    if profile != "smoke" and not allow_dirty:
        shown = ", ".join(dirty[:20]) + (f" and {len(dirty) - 20} more" if len(dirty) > 20 else "")
        raise SystemExit(f"[reproduce] refusing to run the {profile!r} profile on a dirty tree: uncommitted changes in "
                         f"{shown}. Commit them (so the reports name one clean commit), or pass --allow-dirty to "
                         f"record the commit as {sha}-dirty with the diff in {diff_path}.")
    diff_path.write_text(_diff(root))
    return f"{sha}-dirty"


def device_info() -> str:
    import torch
    if torch.cuda.is_available(): return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def now() -> str: return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="a [section] of settings.ini (default: cpu)")
    ap.add_argument("--data", default=None, help="data root holding CIFAR-10 (sets NASH_LIT_DATA)")
    ap.add_argument("--reports", default=None, help="output folder (default: reports/<profile>)")
    ap.add_argument("--settings", default=str(ROOT / "settings.ini"), help="the profiles file")
    ap.add_argument("--notebooks", nargs="*", default=None, help="notebooks to run (default: nbs/1[0-9]_*.ipynb)")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    ap.add_argument("--allow-dirty", action="store_true",
                    help="run a non-smoke profile on a tree with uncommitted changes (the diff goes to <reports>/git.diff)")
    args = ap.parse_args(argv)

    import papermill as pm
    import torch

    params = load_profile(args.profile, args.settings)
    reports = Path(args.reports or ROOT / "reports" / args.profile).resolve()
    reports.mkdir(parents=True, exist_ok=True)
    commit = record_commit(args.profile, reports, args.allow_dirty)
    if args.data is not None: os.environ["NASH_LIT_DATA"] = str(Path(args.data).resolve())
    notebooks = [Path(n).resolve() for n in args.notebooks] if args.notebooks else sorted((ROOT / "nbs").glob("1[0-9]_*.ipynb"))
    if not notebooks: raise SystemExit("no reproduction notebooks (nbs/1[0-9]_*.ipynb) found")
    # papermill writes parameters as Python source and knows no tuples: pass JSON types (lists)
    params = json.loads(json.dumps({**params, "profile": args.profile, "reports_dir": str(reports), "git_commit": commit}))

    manifest = dict(profile=args.profile, parameters=params, git_commit=commit,
                    git_diff="git.diff" if commit.endswith("-dirty") else None, device=device_info(),
                    torch=torch.__version__, python=sys.version.split()[0],
                    data_root=os.environ.get("NASH_LIT_DATA", "data"), start=now(), end=None, wall_seconds=None,
                    status="running", notebooks=[])
    path = reports / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    start, status = time.time(), "ok"
    for nb in notebooks:
        out = reports / nb.name
        t0 = time.time()
        entry = dict(notebook=str(nb.relative_to(ROOT)) if nb.is_relative_to(ROOT) else str(nb),
                     executed=str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out))
        print(f"[reproduce] {args.profile}: {nb.name} -> {out}", flush=True)
        try:
            pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name=args.kernel, cwd=str(nb.parent),
                                progress_bar=False, log_output=True)
            entry["status"] = "ok"
        except Exception as e:
            entry["status"], entry["error"], status = "failed", f"{type(e).__name__}: {e}"[:2000], "failed"
        entry["wall_seconds"] = round(time.time() - t0, 1)
        manifest["notebooks"].append(entry)
        path.write_text(json.dumps(manifest, indent=1))
        if status != "ok": break
    manifest.update(end=now(), wall_seconds=round(time.time() - start, 1), status=status)
    path.write_text(json.dumps(manifest, indent=1))
    print(f"[reproduce] {status} in {manifest['wall_seconds']:.0f} s; manifest {path}", flush=True)
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
