"Helpers shared by the test files and the subprocess scripts they run (not collected by pytest)."
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fingerprint(weights) -> str:
    "SHA-256 of a module's state dict (or of a state dict): names and bytes, in sorted order."
    state = weights.state_dict() if hasattr(weights, "state_dict") else weights
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def start_script(script, *args) -> subprocess.Popen:
    "Run a test script in a subprocess on one thread, its stderr kept for `finish`."
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def log_lines(run_dir) -> int:
    "Complete lines in a run's log so far."
    log = Path(run_dir) / "log.jsonl"
    return log.read_bytes().count(b"\n") if log.exists() else 0


def finish(proc: subprocess.Popen, timeout: float = 300):
    "Wait for a script; fail with the end of its stderr if it failed."
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
