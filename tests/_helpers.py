"Helpers shared by the test files and the subprocess scripts they run (not collected by pytest)."

import hashlib
import os
import random
import signal
import time
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
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def log_lines(run_dir) -> int:
    "Complete lines in a run's log so far."
    log = Path(run_dir) / "log.jsonl"
    return log.read_bytes().count(b"\n") if log.exists() else 0


def finish(proc: subprocess.Popen, timeout: float = 300):
    "Wait for a script; fail with the end of its stderr if it failed."
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


def gray_data(n: int = 32):
    "A 1-channel 16x16 dataset of 4 classes, built from uint8 tensors: it fits no default seed network."
    import torch
    from nash_lit.data import Data

    g = torch.Generator().manual_seed(0)

    def split(k):
        return torch.randint(0, 256, (k, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(k) % 4

    return Data(*split(n), *split(n // 2), *split(n // 2), classes=("a", "b", "c", "d"))


def no_training(monkeypatch, search_module=None):
    "Make any training, or any child the search driver evaluates, fail the test (`search_module`: unused, every search runs through the driver)."
    import pytest
    from importlib import import_module

    monkeypatch.setattr(
        import_module("nash_lit.evaluation"),
        "train",
        lambda *a, **k: pytest.fail("trained before the mistake was found"),
    )
    monkeypatch.setattr(
        import_module("nash_lit.driver"),
        "evaluate_child",
        lambda task: pytest.fail("a child was evaluated before the mistake was found"),
    )


def crash_after_best(monkeypatch, step: int = 1):
    "Make RunStore.save_best raise SystemExit right after it has written best.pt for `step` (a kill at that moment); returns the real one."
    import nash_lit.store as S

    real = S.RunStore.save_best

    def crash(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if args[1] == step:
            raise SystemExit("killed")

    monkeypatch.setattr(S.RunStore, "save_best", crash)
    return real


def small_pareto_config(**changes):
    "A Pareto-NASH config that trains in a second on tiny synthetic data (P0: `TINY_P0`)."
    from nash_lit.pareto import ParetoConfig
    from nash_lit.training import TrainConfig

    train = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
    base = dict(n_gen=2, n_pc=6, n_ac=2, n_epochs=1, seed_epochs=1, recovery_epochs=1, calib_size=16, train=train)
    return ParetoConfig(**{**base, **changes})


def tiny_p0() -> list:
    "Three small seed architectures of different kinds, for the Pareto-NASH tests."
    from nash_lit.arch import seed_arch

    return [seed_arch((16, 16, 16)), seed_arch((16, 32, 32)), seed_arch((16, 32, 32), separable=True)]


def kill_at_random(start, run_dir, upto: int, times: int = 4) -> int:
    "Run `start()` `times` times, each SIGKILLed once the log has a random number (< upto) of lines, after a random delay; kills that landed."
    from nash_lit.runs import read_records

    rnd, kills = random.Random(), 0
    for after in sorted(rnd.sample(range(1, upto), times)):
        proc = start()
        deadline = time.monotonic() + 120
        while proc.poll() is None and log_lines(run_dir) < after and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rnd.uniform(0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        read_records(run_dir)  # the log parses after every kill
    return kills
