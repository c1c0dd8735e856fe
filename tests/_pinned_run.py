"""One pinned run, as a subprocess of tests/test_pinned.py (and of tests/pinned/record.py, which recorded the pins):
python tests/_pinned_run.py NAME OUT.json, NAME one of PINS. It uses only the package's top-level API (and of the
results only the fields that the search-loop refactor keeps).

Float32 training on the CPU is bitwise reproducible only for one choice of kernels: ATen's own vectorised kernels,
oneDNN, NNPACK and MKL each pick their code by the CPU's instruction sets (oneDNN and NNPACK also by its cache
sizes), and training amplifies the last-bit differences. So a pin runs in PIN_ENV, which must be in the environment
before torch is imported (`start` sets it over the caller's; run by hand, the script restarts itself in it), with oneDNN
and NNPACK switched off (BACKENDS): convolutions are then ATen's im2col and MKL's sgemm; ATen's kernels at the AVX2
level, MKL on its COMPATIBLE branch (SSE2: the only branch MKL keeps the same on Intel and non-Intel CPUs), one thread.
Any x86-64 CPU with AVX2 gives the same bits."""

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED_WITH = "1590f1a"  # the commit whose code recorded tests/pinned/*.json (before the search-loop refactor)
PINS = ("nash", "random_search", "pareto", "pareto_async")

PIN_ENV = {  # set before torch is imported; the pin's values win over the caller's
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's kernels at AVX2, also on CPUs with AVX-512 (and AMX)
    "MKL_CBWR": "COMPATIBLE",  # MKL's SSE2 branch without approximate instructions, also on non-Intel CPUs
    "MKL_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
}
BACKENDS = {"mkldnn": False, "nnpack": False}  # oneDNN (torch.backends.mkldnn) and NNPACK in the run: off
OTHER_KNOBS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")  # not fixed: reported by each run
CAPABILITY = "AVX2"  # what torch.backends.cpu.get_cpu_capability() reports under PIN_ENV on such a CPU


def pin_env(base=None) -> dict:
    "`base` (default: this process's environment) with PIN_ENV set over it: the pin's values win."
    return {**(os.environ if base is None else base), **PIN_ENV}


def start(name: str, out, base=None) -> subprocess.Popen:
    "Start pin `name` in a subprocess that writes its result to `out`, in `pin_env(base)`; its stderr kept."
    assert name in PINS, name
    return subprocess.Popen(
        [sys.executable, str(HERE / "_pinned_run.py"), name, str(out)],
        env=pin_env(base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


# --- the run itself (in the subprocess) -----------------------------------------------------------------------------


class Done:
    """The future of a call that has run: done, with its result (or error). Not a concurrent.futures.Future on purpose:
    the searches collect done Futures with as_completed, whose order is that of a set of objects hashed by their
    addresses, so asynchronous Pareto-NASH would plan from a different shared front from run to run; other futures
    (the package's own in-process ones too) are collected in the order they were submitted."""

    def __init__(self, value, error=None):
        self._value, self._error = value, error

    def done(self) -> bool:
        return True

    def exception(self, timeout=None):
        return self._error

    def result(self, timeout=None):
        if self._error is not None:
            raise self._error
        return self._value


def _clean(v):
    "A log value as JSON: numpy scalars as Python, NaN and NA as None, tuples and arrays as lists."
    if v is None:
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()  # numpy scalars and arrays
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, (bool, int, str)):
        return v
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
    except ImportError:
        pass
    return v


def _integer(v):
    v = _clean(v)
    return None if v is None else int(v)


def fingerprint(weights) -> str:
    "SHA-256 of a module's state dict (or of a state dict): names and bytes, in sorted order (as tests/_helpers.py)."
    state = weights.state_dict() if hasattr(weights, "state_dict") else weights
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cpu_model() -> str | None:
    "The CPU's model name (Linux), for the record."
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), None)


FIELDS = ("id", "step", "child", "status", "ops", "val_error", "arch", "params", "flops")
PARETO_FIELDS = ("parent", "n_op", "objectives", "accepted")
INTEGERS = {"id", "step", "child", "params", "flops", "parent", "n_op", "instance"}


def records(log, names) -> list:
    "The log's records (only `names`), JSON-safe, by id (the log is in order of completion)."
    rows = []
    for row in log.to_dict("records"):
        rows.append({k: (_integer if k in INTEGERS else _clean)(row[k]) for k in names})
    return sorted(rows, key=lambda r: r["id"])


def main(name: str, out: str):
    "Run pin `name` and write what it gave to `out` (JSON): the log's records, every task's weights, the result."
    assert name in PINS, f"{name}: not one of {PINS}"
    import torch  # after PIN_ENV is in the environment (`start` puts it there)

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = BACKENDS["mkldnn"]
    torch.backends.nnpack.set_flags(BACKENDS["nnpack"])
    import nash_lit
    from nash_lit import NashConfig, ParetoConfig, TrainConfig, nash, pareto_nash, random_search, seed_arch, synthetic

    evaluated = []  # [task.rng, fingerprint of the trained weights (None: none)], in the order of submission

    class Hashing:
        "An in-process executor that runs each call at once and notes the task's rng and the weights it trained."

        in_process = True  # tasks run here: an in-memory Data does not travel

        def submit(self, fn, task, *args, **kwargs):
            try:
                result, error = fn(task, *args, **kwargs), None
            except Exception as e:
                result, error = None, e
            state = getattr(result, "state", None)
            evaluated.append([list(task.rng), None if state is None else fingerprint(state)])
            return Done(result, error)

    train = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
    start_time = time.perf_counter()
    if name in ("nash", "random_search"):
        config = NashConfig(
            n_steps=3,
            n_child=3,
            n_op=3,
            n_epochs=2,
            seed_epochs=2,
            calib_size=32,
            seed=5,
            operators=("deeper", "wider", "add_skip", "concat_skip"),
            train=train,
        )
        search = nash if name == "nash" else random_search
        r = search(seed_arch((8, 16, 16)), synthetic(512, 128, 32, seed=0), config, executor=Hashing(), progress=False)
        fields = FIELDS
        result = dict(
            id=int(r.id),
            step=int(r.step),
            val_error=float(r.val_error),
            arch=r.net.arch.to_json(),
            weights=fingerprint(r.net),
            paper_id=int(r.paper_id),
            paper_step=int(r.paper_step),
            paper_val_error=float(r.paper_val_error),
            paper_arch=r.paper_net.arch.to_json(),
            paper_weights=fingerprint(r.paper_net),
        )
    else:
        p0 = [seed_arch((16, 16, 16)), seed_arch((16, 32, 32)), seed_arch((16, 32, 32), separable=True)]
        config = ParetoConfig(
            n_gen=3,
            n_pc=8,
            n_ac=3,
            n_epochs=1,
            seed_epochs=1,
            recovery_epochs=1,
            calib_size=16,
            seed=3,
            train=train,
            n_instances=2 if name == "pareto_async" else 1,
        )  # every operator: recovery runs
        r = pareto_nash(p0, synthetic(96, 48, 16, seed=0), config, executor=Hashing(), progress=False)
        fields = FIELDS + PARETO_FIELDS + (("instance",) if name == "pareto_async" else ())
        result = dict(
            front=[int(m.id) for m in r.front],
            hypervolume=[float(h) for h in r.hypervolume],
            members=[
                dict(id=int(m.id), val_error=float(m.val_error), arch=m.net.arch.to_json(), weights=fingerprint(m.net))
                for m in r.front
            ],
        )
    seconds = time.perf_counter() - start_time

    pinned = dict(
        pin=name,
        recorded_with=RECORDED_WITH,
        environment=PIN_ENV,
        backends=BACKENDS,
        torch=torch.__version__,
        records=records(r.log, fields),
        evaluated=evaluated,
        result=result,
    )
    # how this run went (not compared): the test checks that the pin's settings reached torch
    pinned["run"] = dict(
        seconds=round(seconds, 2),
        torch=torch.__version__,
        cpu=cpu_model(),
        package=str(Path(nash_lit.__file__).resolve().parent),
        capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
        backends=dict(mkldnn=bool(torch.backends.mkldnn.enabled), nnpack=bool(torch._C._get_nnpack_enabled())),
        environment={k: os.environ.get(k) for k in (*PIN_ENV, *OTHER_KNOBS)},
    )
    Path(out).write_text(json.dumps(pinned, indent=1) + "\n")


if __name__ == "__main__":
    if any(os.environ.get(k) != v for k, v in PIN_ENV.items()):  # started by hand: torch is not imported yet
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], pin_env())
    main(*sys.argv[1:])
