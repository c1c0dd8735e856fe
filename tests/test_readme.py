"""Issue 23, acceptance 3: the README's Python snippets run as written, at smoke scale. Each snippet is taken from the
README, and only what sets its scale is replaced (CIFAR-10 by synthetic data of its shape, budgets and epochs by a
few), each replacement asserted to match, so a README edit that breaks a snippet, or moves it out of reach of its
replacement, fails here. The snippets run as scripts in a fresh interpreter, in a temporary folder."""

import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
TINY = "TrainConfig(batch_size=32, progress=False)"


def snippets() -> list[str]:
    "The README's ```python blocks, in order."
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def scaled(code: str, replacements: list) -> str:
    "`code` with each (pattern, replacement) applied; each pattern must occur."
    for pattern, new in replacements:
        code, n = re.subn(pattern, new, code)
        assert n, f"the README snippet no longer contains {pattern!r}:\n{code}"
    return code


SMALL_DATA = "DataSpec.synthetic(n_train=128, n_val=64, n_test=64)"
NASH_SMALL = f"NashConfig(n_steps=1, n_child=2, n_op=2, n_epochs=1, seed_epochs=1, train={TINY})"
PARETO_SMALL = f"ParetoConfig(n_gen=1, n_pc=3, n_ac=2, n_epochs=1, seed_epochs=1, recovery_epochs=1, train={TINY}, "


def _run(script: str, folder: Path, timeout: int = 300):
    path = folder / "snippet.py"
    path.write_text(script)
    out = subprocess.run(
        [sys.executable, str(path)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
    )
    assert out.returncode == 0, f"{script}\n---\n{out.stderr[-4000:]}"
    return out.stdout


def test_the_readme_has_the_snippets_this_file_runs():
    assert len(snippets()) == 6, [s.splitlines()[0] for s in snippets()]


def test_the_library_snippets_run(tmp_path):
    "Operators and drawing, NASH with its final training, Pareto-NASH with a baseline: one script, as a user pastes them."
    one, two, _, four, *_ = snippets()
    two = scaled(
        two,
        [
            (r"DataSpec\.cifar10\(val_size=5000\)", SMALL_DATA),
            (r"NashConfig\(n_steps=8\)", NASH_SMALL),
            (r"epochs=600", "epochs=1"),
        ],
    )
    four = scaled(
        four,
        [(r"ParetoConfig\(n_gen=8, ", PARETO_SMALL), (r"epochs=600", "epochs=1")],
    )
    prelude = "from nash_lit import TrainConfig\nfrom nash_lit.baselines import baseline  # noqa\n"
    out = _run(prelude + one + two + four, tmp_path)
    assert (tmp_path / "change.png").stat().st_size > 0 and (tmp_path / "runs" / "nash0" / "log.jsonl").exists()
    assert (tmp_path / "runs" / "pareto0" / "log.jsonl").exists(), out


def test_the_executor_snippet_runs(tmp_path):
    "NASH's children on two spawned workers, under the main guard the README shows."
    _, two, three, *_ = snippets()
    imports = "".join(line + "\n" for line in two.splitlines() if line.startswith("from "))
    setup = f"from nash_lit import TrainConfig, seed_arch\nspec = {SMALL_DATA}\n"
    three = scaled(three, [(r"NashConfig\(n_steps=8\)", NASH_SMALL)])
    _run(imports + setup + three + "    print(result.val_error)\n", tmp_path)


def test_the_own_data_snippets_run(tmp_path):
    "Your own data: from arrays to a shipped file, and the file read back with torch alone."
    *_, five, six = snippets()
    arrays = (
        "import numpy as np\nfrom nash_lit import TrainConfig\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.integers(0, 256, (96, 3, 16, 16), dtype=np.uint8), rng.integers(0, 4, 96)\n"
        "x_test, y_test = rng.integers(0, 256, (32, 3, 16, 16), dtype=np.uint8), rng.integers(0, 4, 32)\n"
        "x_new = x_test[:5]\n"
    )
    five = scaled(five, [(r"NashConfig\(n_steps=8\)", NASH_SMALL), (r"epochs=100", "epochs=1")])
    six = (
        "import torch\nimages = torch.from_numpy(x_new)\n"
        + six
        + "\nassert labels.shape == (5,) and len(classes) == 4\n"
    )
    _run(arrays + five + six, tmp_path)
