"""One child's evaluation (nash_lit.evaluation): small picklable tasks, determinism in and out of process, fresh weights,
recovery of approximate operators, failures as statuses."""

import hashlib
import json
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from nash_lit.arch import Net, flops, seed_arch
from nash_lit.data import DataSpec
from nash_lit.evaluation import ChildResult, ChildTask, calibration_batch, evaluate_child, fresh, make_child
from nash_lit.operators import generate_child
from nash_lit.training import TrainConfig, TrainingDiverged
import nash_lit.evaluation as E

TRAIN = TrainConfig(epochs=1, batch_size=32, amp=False, channels_last=False, progress=False, seed=11)
SPEC = DataSpec.synthetic(n_train=64, n_val=32, n_test=32, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def fingerprint(state: dict) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def task(widths=(4, 8, 8), **changes) -> ChildTask:
    torch.manual_seed(0)
    parent = Net(seed_arch(widths))
    base = dict(
        parent_arch=parent.arch.to_json(),
        parent_state=parent.state_dict(),
        data=SPEC,
        n_op=3,
        operators=("deeper", "wider", "skip"),
        rng=[0, 1, 2, 0],
        train=TRAIN,
        calib_size=16,
        calib_seed=0,
    )
    return ChildTask(**{**base, **changes})


def test_full_cifar10_task_is_small():
    "Acceptance 3: a task for full CIFAR-10 pickles to under 1 MB beyond the parent's weights (no data on disk needed)."
    torch.manual_seed(0)
    parent = Net(seed_arch((32, 64, 128)))
    state = parent.state_dict()
    t = ChildTask(
        parent.arch.to_json(),
        state,
        DataSpec.cifar10(),
        5,
        ("deeper", "wider", "skip"),
        [0, 1, 0, 0],
        TrainConfig(epochs=20),
    )
    extra = len(pickle.dumps(t)) - len(pickle.dumps(state))
    assert extra < 1_000_000, f"{extra:,} bytes beyond the weights"
    back = pickle.loads(pickle.dumps(t))
    assert back.data == t.data and back.parent_arch == t.parent_arch


def test_same_task_same_child_and_weights():
    a, b = evaluate_child(task()), evaluate_child(task())
    assert a.status == b.status == "ok", a.error
    assert a.record() == {**b.record(), "recovery_seconds": a.recovery_seconds, "train_seconds": a.train_seconds}
    assert fingerprint(a.state) == fingerprint(b.state)
    json.dumps(a.record())  # the record is what the log stores: JSON, no tensors
    assert "state" not in a.record()


def test_process_pool_gives_the_same_result():
    "The task travels (spawned process, its own data cache) and comes back bitwise the same."
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    t = task(rng=[3, 1, 0, 0])
    # the worker uses this process's thread count: another count sums in another order (other last bits)
    with ProcessPoolExecutor(
        1, mp_context=get_context("spawn"), initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)
    ) as pool:
        remote = pool.submit(evaluate_child, t).result()
    local = evaluate_child(t)
    assert remote.status == "ok" and remote.arch == local.arch and remote.val_error == local.val_error
    assert fingerprint(remote.state) == fingerprint(local.state)


def test_calibration_batch_is_made_from_the_loaded_data():
    "The worker's batch is the one the search made before: calibration_batch(data, size, run seed)."
    data = SPEC.load("cpu")
    t = task(n_op=1, operators=("deeper",), calib_seed=4)
    seen = {}
    real = E.generate_child

    def spy(net, n_op, operators, rng, calib):
        seen["calib"] = calib
        return real(net, n_op, operators, rng, calib)

    E.generate_child = spy
    try:
        make_child(t, data)
    finally:
        E.generate_child = real
    assert torch.equal(seen["calib"], calibration_batch(data, 16, 4))


def test_n_op_zero_trains_the_parent():
    out = evaluate_child(task(n_op=0))
    assert out.ops == [] and out.arch == seed_arch((4, 8, 8)).to_json() and out.affected == []


def test_fresh_weights_train_the_architecture_from_scratch():
    "Random search's children: the architecture of generate_child, new weights from the training seed, no recovery."
    t = task(fresh_weights=True, operators=("deeper", "wider", "skip", "prune"), n_op=4, rng=[1, 2, 3, 0, 2])
    out = evaluate_child(t)
    assert out.status == "ok" and out.recovery_seconds == 0.0 and out.affected == []
    parent = Net(seed_arch((4, 8, 8)), task().parent_state)
    child = generate_child(
        parent, 4, t.operators, np.random.default_rng(t.rng), calibration_batch(SPEC.load("cpu"), 16, 0)
    )
    assert out.arch == child.net.arch.to_json()
    net = fresh(child.net.arch, TRAIN.seed)
    from nash_lit.training import train

    train(net, SPEC.load("cpu"), TRAIN)
    assert fingerprint({k: v.cpu() for k, v in net.state_dict().items()}) == fingerprint(out.state)


def test_approximate_operators_are_recovered():
    "A chain with approximate operators names what it affected, and recovery trains those (and only those)."
    t = task(
        widths=(16, 32, 32),
        operators=("prune", "to_separable", "remove"),
        n_op=2,
        rng=[1, 1, 0, 0],
        recovery_epochs=1,
        train=replace(TRAIN, epochs=0),
    )
    data = SPEC.load("cpu")
    parent, child = make_child(t, data)
    assert child.affected, child.ops
    before = {k: v.clone() for k, v in child.net.state_dict().items()}
    assert E.recover_child(t, parent, child, data) > 0
    images = E.recovery_images(t, child, len(data.y_train))
    assert images == t.recovery_epochs * len(data.y_train)  # RECOVERY's batch of 128 holds all 64
    moved = {k for k, v in child.net.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and moved <= set(child.affected)
    out = evaluate_child(t)
    assert out.status == "ok" and out.recovery_seconds > 0 and out.affected == list(child.affected)
    assert (out.recovery_images, out.train_images, out.train_flops) == (images, 0, 0.0)  # trained 0 epochs: nothing
    assert out.recovery_flops == 3.0 * out.flops * images + flops(parent.arch) * images  # the teacher: forward only


def test_exact_chain_skips_recovery(monkeypatch):
    monkeypatch.setattr(E, "recover", lambda *a, **k: pytest.fail("recovered an exact chain"))
    assert evaluate_child(task()).recovery_seconds == 0.0


@pytest.mark.parametrize(
    "error, status",
    [
        (TrainingDiverged("loss became nan"), "diverged"),
        (RuntimeError("CUDA out of memory. Tried to allocate"), "oom"),
        (MemoryError(), "oom"),
        (KeyError("boom"), "failed"),
    ],
)
def test_failures_are_statuses(monkeypatch, error, status):
    def broken(*a, **k):
        raise error

    monkeypatch.setattr(E, "train", broken)
    out = evaluate_child(task())
    assert (out.status, out.state, out.val_error) == (status, None, None)
    assert out.arch is not None and out.ops  # what was made before training is still described
    assert out.error


def test_real_divergence():
    out = evaluate_child(task(train=replace(TRAIN, lr_max=1e30)))
    assert out.status == "diverged" and out.state is None and out.arch is not None


def test_unknown_operator_is_a_failed_child():
    out = evaluate_child(task(operators=("deeper", "narrower")))
    assert out.status == "failed" and "narrower" in out.error and out.arch is None


def test_result_record_fields():
    assert list(ChildResult().record()) == [
        "status",
        "ops",
        "arch",
        "params",
        "flops",
        "val_error",
        "affected",
        "recovery_seconds",
        "train_seconds",
        "recovery_images",
        "train_images",
        "recovery_flops",
        "train_flops",
        "error",
    ]
