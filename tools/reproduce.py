"""Run the reproduction notebooks (nbs/3[0-9]_*.ipynb) of one settings.ini profile with papermill.

    python tools/reproduce.py --profile cpu [--data DIR] [--reports DIR] [--notebooks nbs/30_table1.ipynb ...]
                              [--allow-dirty]

Each profile of settings.ini is a set of papermill parameters (Python literals, read with
ast.literal_eval, never eval). The profile's reports folder, reports/<profile>/ (or --reports DIR),
always holds one complete, successful run: executed notebooks (never written into nbs/), what they
write (tables, figures, search logs) and a run manifest, manifest.json. A run of some notebooks
(--notebooks) starts from a copy of the reports folder, so the other notebooks' reports stay; the
manifest lists them under `kept`, each with the commit and parameters it ran with, beside this run's
`notebooks`. A later notebook may read an earlier one's outputs (32_table2 reads 30's and 31's search
logs), so rerunning a notebook whose later ones would stay is refused. With --continue RUN_DIR the
copy starts from a kept run folder instead, so the notebooks that succeeded in a failed or interrupted
run need not run again.

A run writes into a fresh sibling folder, reports/.<profile>-run-<time>-<pid>/, which every notebook
gets as its `reports_dir`. Only when every notebook succeeded does that folder replace the reports
folder (the old one is moved aside, the new one moved in, the old one deleted). A failed run leaves
the reports folder untouched, keeps its own folder and prints why it failed: the failing cell's
exception and the end of its traceback, and the executed notebook to open; manifest.json there holds
the full traceback.

The commit is computed once, here, and passed to every notebook as the papermill parameter
`git_commit` and written into manifest.json, so a table and its manifest never disagree. A
reproduction other than `smoke` refuses to run on a tree with uncommitted changes to tracked files
or untracked files under nbs/, nash_lit/ or tools/, naming them; with --allow-dirty it runs, records the
commit as `<sha>-dirty` and writes `git diff HEAD` to git.diff beside the manifest. (A dirty `smoke`
run does the same without asking.)

The data root is --data, else the environment variable NASH_LIT_DATA, else data/ of this checkout;
it is passed to the notebooks (which run from nbs/) as an absolute NASH_LIT_DATA.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_profile(
    name: str,  # the [section] of settings.ini
    path=ROOT / "settings.ini",  # the profiles file
) -> dict:
    "The papermill parameters of one profile: every value a Python literal."
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the parameters' case
    if not parser.read(path):
        raise FileNotFoundError(f"no profiles file at {path}")
    if name not in parser:
        raise KeyError(f"no profile [{name}] in {path}; profiles: {parser.sections()}")
    params = {}
    for key, text in parser[name].items():
        try:
            params[key] = ast.literal_eval(text)
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
    except (OSError, subprocess.CalledProcessError):
        return "unknown", []
    return sha, [line[3:].split(" -> ")[-1] for line in status if line.strip()] + untracked


def _diff(root: Path) -> str:
    "`git diff HEAD`, followed by each untracked code file as an addition."
    parts = [_git(root, "diff", "HEAD")]
    for path in _untracked_code(root):  # --no-index exits 1 when the files differ, which they do
        parts.append(
            subprocess.run(
                ["git", "diff", "--no-index", "/dev/null", path], cwd=root, capture_output=True, text=True
            ).stdout
        )
    return "".join(parts)


def record_commit(
    profile: str,  # the profile being reproduced
    reports: Path,  # the folder the run writes into
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
        raise SystemExit(
            f"[reproduce] refusing to run the {profile!r} profile on a dirty tree: uncommitted changes in "
            f"{shown}. Commit them (so the reports name one clean commit), or pass --allow-dirty to "
            f"record the commit as {sha}-dirty with the diff in git.diff beside the manifest."
        )
    diff_path.write_text(_diff(root))
    return f"{sha}-dirty"


def check_target(target: Path):
    "Refuse a reports folder that a successful run must not replace: a file, the checkout or home, or a folder of other files."
    if target.exists() and not target.is_dir():
        raise SystemExit(f"[reproduce] the reports folder {target} is a file; name a folder (--reports DIR)")
    for protected in (ROOT, Path.home()):
        if target == protected.resolve() or target in protected.resolve().parents:
            raise SystemExit(
                f"[reproduce] the reports folder {target} holds {protected}, and a successful run "
                f"replaces its reports folder; name a folder of its own (--reports DIR)"
            )
    if target.is_dir() and any(target.iterdir()) and not is_reports_manifest(target / "manifest.json"):
        raise SystemExit(
            f"[reproduce] {target} holds files but no manifest.json written by this runner, so it is not "
            f"a reports folder, and a successful run would replace it; name a new or empty folder (--reports DIR)"
        )


def is_reports_manifest(path: Path) -> bool:
    "Whether `path` is a manifest this runner wrote (a JSON object with its keys), not any file of that name."
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"profile", "git_commit", "notebooks"} <= set(manifest)


def fresh_run_dir(target: Path) -> Path:
    "A new, empty folder beside `target` (same filesystem, so that publishing it is a rename)."
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run = target.parent / f".{target.name}-run-{stamp}-{os.getpid()}"
    run.mkdir()
    return run


def publish(
    run: Path,  # the finished run's folder
    target: Path,  # the reports folder it replaces
):
    "Replace `target` by `run`: the old folder moved aside, the new one moved in, the old one deleted."
    old = None
    if target.exists():
        old = run.with_name(run.name.replace("-run-", "-old-", 1))
        target.rename(old)
    try:
        run.rename(target)
    except BaseException:
        if old is not None:
            old.rename(target)  # put the previous reports back
        raise
    if old is not None:
        shutil.rmtree(old)


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # colour codes in IPython's tracebacks


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def describe_failure(
    e: BaseException,  # what papermill raised
    executed: Path,  # the executed notebook it was writing
    tail: int = 15,  # traceback lines shown on the terminal
) -> tuple[str, dict]:
    "(what to print on the terminal, the manifest's full record) of a notebook that failed."
    there = executed.is_file()  # papermill writes the notebook up to the failing cell; not when it failed to start
    if all(hasattr(e, a) for a in ("ename", "evalue", "traceback", "exec_count")):  # PapermillExecutionError
        tb = strip_ansi("\n".join(e.traceback)).rstrip()
        record = dict(
            type=type(e).__name__,
            ename=e.ename,
            evalue=strip_ansi(str(e.evalue)),
            cell_index=e.cell_index,
            exec_count=e.exec_count,
            source=e.source,
            traceback=tb,
        )
        last = tb.splitlines()
        if last and last[-1].startswith(f"{e.ename}:"):
            last = last[:-1]  # printed just above
        lines = [
            f"{executed.name} failed in cell In [{e.exec_count}]:",
            f"  {e.ename}: {record['evalue']}",
            "  the end of its traceback:",
        ]
        lines += [f"    {line}" for line in last[-tail:]]
    else:
        record = dict(
            type=type(e).__name__,
            ename=type(e).__name__,
            evalue=strip_ansi(str(e)),
            traceback=strip_ansi("".join(traceback.format_exception(e))).rstrip(),
        )
        lines = [f"{executed.name} failed: {type(e).__name__}: {record['evalue']}"]
    record["executed"] = str(executed) if there else None
    lines.append(
        f"  the executed notebook, with the failing cell's output: {executed}"
        if there
        else "  (no executed notebook was written)"
    )
    return "\n".join(lines), record


def device_info() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def shown(path: Path) -> str:
    "A path relative to the checkout when it lies inside it."
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="a [section] of settings.ini (default: cpu)")
    ap.add_argument("--data", default=None, help="data root holding CIFAR-10 (default: NASH_LIT_DATA, else data/)")
    ap.add_argument(
        "--reports", default=None, help="reports folder, replaced by a successful run (default: reports/<profile>)"
    )
    ap.add_argument("--settings", default=str(ROOT / "settings.ini"), help="the profiles file")
    ap.add_argument("--notebooks", nargs="*", default=None, help="notebooks to run (default: nbs/3[0-9]_*.ipynb)")
    ap.add_argument(
        "--continue",
        dest="continue_from",
        default=None,
        metavar="RUN_DIR",
        help="with --notebooks: start from a kept run folder (a failed or interrupted run) instead of the "
        "reports folder, keeping the notebooks that succeeded there",
    )
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    ap.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run a non-smoke profile on a tree with uncommitted changes (the diff goes to git.diff)",
    )
    return ap.parse_args(argv)


def carry_over(
    source: Path,  # the reports folder (or a kept run folder, --continue) whose other notebooks stay
    run: Path,  # the fresh run folder
    notebooks: list,  # the notebooks this run executes
    profile: str,  # this run's profile
) -> list:
    "Copy the other notebooks' reports into `run`; their manifest entries (each with its commit and parameters), to keep."
    manifest = source / "manifest.json"
    if not is_reports_manifest(manifest):
        return []
    previous = json.loads(manifest.read_text())
    if previous["profile"] != profile:
        raise SystemExit(f"[reproduce] {source} holds the {previous['profile']!r} profile's reports, not {profile!r}'s")
    rerun = {nb.name for nb in notebooks}
    done = [e for e in previous.get("kept", []) + previous["notebooks"] if e.get("status") == "ok"]
    kept = [
        {
            **e,
            "git_commit": e.get("git_commit", previous["git_commit"]),
            "parameters": e.get("parameters", previous.get("parameters")),
        }
        for e in done
        if Path(e["notebook"]).name not in rerun
    ]
    gone = [e["notebook"] for e in kept if not (ROOT / e["notebook"]).is_file()]
    if gone:  # e.g. chapters renumbered since: their reports would stay under names no notebook has
        raise SystemExit(
            f"[reproduce] {source} holds reports of {gone}, which are no longer notebooks of this checkout "
            f"(renamed or removed): run every notebook (no --notebooks) to replace them"
        )
    later = sorted(Path(e["notebook"]).name for e in kept if Path(e["notebook"]).name > min(rerun))
    if later:  # a later notebook may read what a rerun one writes (32_table2 reads 30's and 31's search logs)
        raise SystemExit(
            f"[reproduce] rerunning {sorted(rerun)} would leave {later}, which may read their outputs, "
            f"stale in {source}: add them to --notebooks"
        )
    skip = {"manifest.json", "git.diff"} | rerun  # the rerun notebooks' executed copies are written afresh
    shutil.copytree(
        source, run, dirs_exist_ok=True, ignore=lambda d, names: [n for n in names if Path(d) == source and n in skip]
    )
    return kept


def run_notebooks(args, notebooks: list, params: dict, run: Path, manifest: dict) -> str:
    "Execute the notebooks into `run`, one after another, stopping at the first failure; the run's status."
    import papermill as pm

    path = run / "manifest.json"
    for nb in notebooks:
        out, t0 = run / nb.name, time.time()
        own = pm.inspect_notebook(str(nb))  # each notebook gets its own parameters: papermill warns of the others
        given = {k: v for k, v in params.items() if k in own}
        entry = dict(notebook=shown(nb), executed=shown(out), git_commit=manifest["git_commit"], parameters=given)
        print(f"[reproduce] {args.profile}: {nb.name} -> {out}", flush=True)
        try:
            pm.execute_notebook(
                str(nb),
                str(out),
                parameters=given,
                kernel_name=args.kernel,
                cwd=str(nb.parent),
                progress_bar=False,
                log_output=True,
            )
            entry["status"] = "ok"
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
        except Exception as e:
            text, entry["error"] = describe_failure(e, out)
            entry["status"] = "failed"
            print(f"[reproduce] {text}", file=sys.stderr, flush=True)
        entry["wall_seconds"] = round(time.time() - t0, 1)
        manifest["notebooks"].append(entry)
        path.write_text(json.dumps(manifest, indent=1))
        if entry["status"] != "ok":
            return entry["status"]
    return "ok"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    params = load_profile(args.profile, args.settings)
    target = Path(args.reports or ROOT / "reports" / args.profile).expanduser().resolve()
    check_target(target)
    run = fresh_run_dir(target)
    try:  # nothing of a run that is refused before it starts is kept
        commit = record_commit(args.profile, run, args.allow_dirty)
        notebooks = (
            [Path(n).resolve() for n in args.notebooks]
            if args.notebooks
            else sorted((ROOT / "nbs").glob("3[0-9]_*.ipynb"))
        )
        if not notebooks:
            raise SystemExit("no reproduction notebooks (nbs/3[0-9]_*.ipynb) found")
    except BaseException:
        shutil.rmtree(run)
        raise
    # the notebooks run from nbs/: a relative data root would be read from there, so pass it absolute
    root = args.data or os.environ.get("NASH_LIT_DATA") or ROOT / "data"
    os.environ["NASH_LIT_DATA"] = str(Path(root).expanduser().resolve())
    # papermill writes parameters as Python source and knows no tuples: pass JSON types (lists)
    params = json.loads(json.dumps({**params, "profile": args.profile, "reports_dir": str(run), "git_commit": commit}))

    # a run of some notebooks (--notebooks) keeps the others' reports and says at which commit each ran
    source = Path(args.continue_from).resolve() if args.continue_from else target
    try:  # a partial run refused here (stale or foreign reports) leaves no run folder either
        kept = carry_over(source, run, notebooks, args.profile) if args.notebooks else []
    except BaseException:
        shutil.rmtree(run)
        raise
    manifest = dict(
        profile=args.profile,
        parameters=params,
        git_commit=commit,
        git_diff="git.diff" if commit.endswith("-dirty") else None,
        device=device_info(),
        torch=torch.__version__,
        python=sys.version.split()[0],
        data_root=os.environ["NASH_LIT_DATA"],
        reports=shown(target),
        run_dir=shown(run),
        start=now(),
        end=None,
        wall_seconds=None,
        status="running",
        notebooks=[],
        kept=kept,
    )
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))
    start = time.time()
    status = run_notebooks(args, notebooks, params, run, manifest)
    manifest.update(end=now(), wall_seconds=round(time.time() - start, 1), status=status)
    if status == "ok":  # the manifest describes the folder it will live in
        for entry in manifest["notebooks"] + kept:
            entry["executed"] = shown(target / Path(entry["executed"]).name)
    (run / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if status != "ok":
        why = " (manifest.json there holds the full traceback)" if status == "failed" else ""
        print(
            f"[reproduce] {status} after {manifest['wall_seconds']:.0f} s; {shown(target)} is untouched. This run's "
            f"folder is kept: {run}{why}",
            file=sys.stderr,
            flush=True,
        )
        return 130 if status == "interrupted" else 1
    publish(run, target)
    print(
        f"[reproduce] ok in {manifest['wall_seconds']:.0f} s; reports in {target} (manifest {target / 'manifest.json'})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
