"Training pipeline (nash_lit.train): augmentation, frozen layers, divergence, data loading, determinism, bad input."
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nash_lit import data as D
from nash_lit import train as T
from nash_lit.arch import Net, seed_arch

CPU = dict(device="cpu", progress=False)


@pytest.fixture(scope="module")
def data():
    return D.synthetic(256, 64, 64, seed=0)


def small_net(seed=0):
    torch.manual_seed(seed)
    return Net(seed_arch((8, 16, 32)))


def timeless(history):
    return [{k: v for k, v in row.items() if k not in ("seconds", "img_s")} for row in history]


# --- augmentation ---------------------------------------------------------------------------------

def test_augmentation_is_per_sample():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(1, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=g)
    batch = img.repeat(16, 1, 1, 1)
    out = T.crop_flip(batch, g)
    assert not torch.equal(out[0], out[1])
    assert len({o.numpy().tobytes() for o in out}) > 8  # 81 crops x 2 flips: nearly all distinct
    cut = T.cutout(torch.ones(16, 3, 32, 32), g)
    assert not torch.equal(cut[0], cut[1])
    cfg = T.TrainConfig(mixup_alpha=0, **CPU)
    x, *_ = T.augment(batch, torch.zeros(16, dtype=torch.long), torch.full((3,), .5), torch.full((3,), .25), g, cfg)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert not torch.equal(x[0], x[1])


def test_crop_flip_is_a_shifted_window():
    g = torch.Generator().manual_seed(1)
    img = torch.arange(1, 3 * 32 * 32 + 1).reshape(1, 3, 32, 32)
    assert torch.equal(T.crop_flip(img, g, pad=0, flip=False), img)
    out = T.crop_flip(img.repeat(64, 1, 1, 1), g, pad=4, flip=True)
    for o in out:  # every output is (a flip of) a shift of the image with zeros shifted in
        for cand in (o, o.flip(-1)):
            nz = cand[0].nonzero()
            r0, c0 = nz.min(0).values.tolist()
            r1, c1 = (nz.max(0).values + 1).tolist()
            window = cand[:, r0:r1, c0:c1]
            src_r, src_c = (window[0, 0, 0].item() - 1) // 32, (window[0, 0, 0].item() - 1) % 32
            if torch.equal(window, img[0, :, src_r:src_r + r1 - r0, src_c:src_c + c1 - c0]): break
        else: raise AssertionError("crop is not a window of the image")


def test_cutout_and_mixup():
    g = torch.Generator().manual_seed(2)
    cut = T.cutout(torch.ones(256, 3, 32, 32), g, size=16)
    zeroed = (cut[:, 0] == 0).sum((1, 2))
    assert zeroed.max() == 256 and zeroed.min() >= 64
    assert torch.equal(T.cutout(torch.ones(2, 3, 8, 8), g, size=0), torch.ones(2, 3, 8, 8))
    x, y = torch.randn(32, 3, 4, 4), torch.arange(32)
    xm, ya, yb, lam = T.mixup(x, y, g, alpha=1.0)
    assert 0 <= lam <= 1 and torch.equal(ya, y) and sorted(yb.tolist()) == list(range(32))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[yb], atol=1e-6)
    assert T.mixup(x, y, g, alpha=0)[3] == 1.0


def test_normalize_uses_training_statistics(data):
    x = T.normalize(data.x_train, data.mean, data.std)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4)


# --- training ---------------------------------------------------------------------------------------

def test_training_learns_and_anneals_to_zero(data):
    h = T.train(small_net(), data, T.TrainConfig(epochs=3, batch_size=32, lr_max=0.1, **CPU))
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert h[-1]["loss"] < h[0]["loss"] and h[-1]["val_error"] < 0.6
    assert [r["lr"] for r in h] == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)], abs=1e-9)
    assert all(r["seconds"] > 0 and r["img_s"] > 0 for r in h)


def test_lr_restarts_at_every_call(data):
    net, cfg = small_net(), T.TrainConfig(epochs=2, batch_size=64, lr_max=0.1, **CPU)
    assert [r["lr"] for r in T.train(net, data, cfg)] == [r["lr"] for r in T.train(net, data, cfg)]


def test_two_cpu_runs_with_one_seed_are_identical(data):
    cfg = T.TrainConfig(epochs=2, batch_size=32, **CPU)
    nets = [small_net(), small_net()]
    h1, h2 = (T.train(n, data, cfg) for n in nets)
    assert timeless(h1) == timeless(h2)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    h3 = T.train(small_net(), data, T.TrainConfig(epochs=2, batch_size=32, seed=1, **CPU))
    assert timeless(h3) != timeless(h1)


def test_frozen_parameters_and_bn_statistics_are_bitwise_unchanged(data):
    net = small_net()
    T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU))  # BN statistics away from their init
    net.blocks["3"].conv.weight.requires_grad_(False)  # a flag set by the user survives the call
    flags = {k: p.requires_grad for k, p in net.named_parameters()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainable = ["blocks.3.conv.weight", "blocks.3.bn.weight", "blocks.3.bn.bias"]
    T.train(net, data, T.TrainConfig(epochs=2, batch_size=64, weight_decay=5e-2, **CPU), trainable=trainable)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # block 3's conv and BN train (its BN statistics move with them); nothing else changes
    assert changed == set(trainable) | {"blocks.3.bn.running_mean", "blocks.3.bn.running_var",
                                        "blocks.3.bn.num_batches_tracked"}
    assert {k: p.requires_grad for k, p in net.named_parameters()} == flags


def test_frozen_bn_layer_keeps_statistics_when_only_its_conv_trains(data):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU), trainable=["blocks.1.conv.weight"])
    after = net.state_dict()
    assert {k for k in before if not torch.equal(before[k], after[k])} == {"blocks.1.conv.weight"}


def test_train_accepts_any_module(data):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    h = T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU))
    assert 0 <= h[0]["val_error"] <= 1
    assert 0 <= T.evaluate(net, data, "test") <= 1


def test_divergence_raises_the_dedicated_exception(data):
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(T.TrainingDiverged, match="loss became"):
        T.train(linear, data, T.TrainConfig(epochs=1, batch_size=32, lr_max=1e30, **CPU))
    net = small_net()
    with torch.no_grad(): net.blocks["1"].conv.weight.fill_(float("inf"))
    with pytest.raises(T.TrainingDiverged):
        T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU))
    assert issubclass(T.TrainingDiverged, RuntimeError)


def test_evaluate_restores_mode_and_counts_errors(data):
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(10))
        def forward(self, x): return self.w.expand(len(x), 10) + nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10)
    net = Constant().train()
    err = T.evaluate(net, data, "val", batch_size=7)
    assert err == pytest.approx((data.y_val != 0).float().mean().item())
    assert net.training


# --- data ---------------------------------------------------------------------------------------------

def _fake_cifar(root, per_batch=20, as_tar=False):
    "A CIFAR-10-shaped python-pickle dataset with `per_batch` images per batch."
    rng = np.random.default_rng(0)
    folder = root / D.FOLDER
    folder.mkdir(parents=True)
    for name in D._BATCHES:
        d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, per_batch).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as f: pickle.dump(d, f, protocol=2)
    if as_tar:
        with tarfile.open(root / D.ARCHIVE, "w:gz") as tar: tar.add(folder, arcname=D.FOLDER)
        for p in folder.iterdir(): p.unlink()
        folder.rmdir()


def test_reads_folder_and_archive_identically(tmp_path, monkeypatch):
    _fake_cifar(tmp_path / "a")
    _fake_cifar(tmp_path / "b", as_tar=True)
    fail = lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not download"))
    monkeypatch.setattr("torchvision.datasets.CIFAR10", fail)
    a = D.cifar10(tmp_path / "a", device="cpu", val_size=10)
    b = D.cifar10(tmp_path / "b", device="cpu", val_size=10)
    for s in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(a.split(s), b.split(s)))
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (90, 10, 20)
    assert a.x_train.dtype == torch.uint8 and a.x_train.shape[1:] == (3, 32, 32)
    raw = D.read_cifar10(tmp_path / "a")["train"][0]
    rows = {r.tobytes() for r in raw}
    assert all(x.numpy().tobytes() in rows for x in a.x_val)  # validation images come from the training batches
    train_rows = {x.numpy().tobytes() for x in a.x_train}
    assert not any(x.numpy().tobytes() in train_rows for x in a.x_val)  # and are disjoint from training
    final = D.cifar10(tmp_path / "a", device="cpu", final=True)
    assert (len(final.y_train), len(final.y_val)) == (100, 0)
    sub = D.cifar10(tmp_path / "a", device="cpu", val_size=10, train_size=30, val_subset=5, test_size=7)
    assert (len(sub.y_train), len(sub.y_val), len(sub.y_test)) == (30, 5, 7)
    assert torch.equal(sub.x_train, a.x_train[:30])  # a subset is a prefix of the fixed permutation
    monkeypatch.setenv("NASH_LIT_DATA", str(tmp_path / "b"))
    assert torch.equal(D.cifar10(device="cpu", val_size=10).x_val, a.x_val)


def test_missing_dataset_without_download_gives_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs): raise OSError("network is unreachable")
    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as e: D.cifar10(root, device="cpu")
    msg = str(e.value)
    assert str(root.resolve()) in msg and D.ARCHIVE in msg and "download failed" in msg
    with pytest.raises(FileNotFoundError, match="downloading is off"): D.read_cifar10(root, download=False)


# --- bad input ----------------------------------------------------------------------------------------

def test_bad_input_gives_clear_value_errors(data):
    net = small_net()
    with pytest.raises(ValueError, match="unknown device"): T.train(net, data, T.TrainConfig(device="gpu0", progress=False))
    with pytest.raises(ValueError, match="epochs must be >= 0"): T.TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="batch_size"): T.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="not among the network's parameters"):
        T.train(net, data, T.TrainConfig(**CPU), trainable=["blocks.1.conv.weight", "nope"])
    with pytest.raises(ValueError, match="empty"): T.train(net, data, T.TrainConfig(**CPU), trainable=[])
    with pytest.raises(ValueError, match="unknown split"): T.evaluate(net, data, "validation")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"): D.default_device("cuda")
    assert all(p.requires_grad for p in net.parameters())  # a refused call leaves the flags alone


def test_distillation_with_a_teacher_and_fixed_batchnorm_statistics():
    "teacher= trains towards the teacher's outputs; bn_eval=True keeps every running statistic fixed."
    import copy
    from nash_lit.arch import Net, seed_arch
    data = D.synthetic(256, 64, 64, seed=3)
    cfg = T.TrainConfig(epochs=1, batch_size=64, progress=False, amp=False, channels_last=False)
    torch.manual_seed(0)
    teacher = Net(seed_arch((8, 8, 8)))
    T.train(teacher, data, cfg)
    student = copy.deepcopy(teacher)
    assert student.training and teacher.training
    stats = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    history = T.train(student, data, T.TrainConfig(**{**cfg.__dict__, "bn_eval": True, "weight_decay": 0.0}), teacher=teacher)
    assert history[0]["loss"] < 1e-3  # a copy of the teacher already matches it: the loss is ~0, and finite
    assert teacher.training  # the teacher's mode is restored
    for k, v in student.state_dict().items():
        if k in stats: assert torch.equal(v, stats[k]), k


# --- epoch checkpoints ------------------------------------------------------------------------------------------------

TRAIN_SCRIPT = Path(__file__).with_name("_train_run.py")


def _start_training(checkpoint, out):
    env = dict(os.environ, PYTHONPATH=str(TRAIN_SCRIPT.parent.parent), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), str(checkpoint), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _checkpoint_epoch(path) -> int:
    if not path.exists(): return 0
    return len(torch.load(path, map_location="cpu", weights_only=True)["history"])


def test_checkpoint_sigkill_resume_is_bitwise(tmp_path):
    "A training killed with SIGKILL mid-epoch and resumed ends with the uninterrupted run's weights, bitwise."
    ref = _start_training("-", tmp_path / "ref.json")
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-3000:]
    ckpt, kills = tmp_path / "train.pt", 0
    for wait_for in (2, 5):  # kill once the checkpoint holds this many epochs, a moment into the next one
        proc = _start_training(ckpt, tmp_path / "out.json")
        deadline = time.time() + 240
        while _checkpoint_epoch(ckpt) < wait_for and proc.poll() is None and time.time() < deadline: time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.15))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 1, "the training finished before it could be killed; make it longer"
    assert 0 < _checkpoint_epoch(ckpt) < 8
    proc = _start_training(ckpt, tmp_path / "out.json")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    expected, got = json.loads((tmp_path / "ref.json").read_text()), json.loads((tmp_path / "out.json").read_text())
    assert got["epochs"] == list(range(1, 9))
    assert got == expected


def test_checkpoint_refuses_other_settings_and_networks(tmp_path):
    data = D.synthetic(128, 32, 32, seed=0)
    cfg = T.TrainConfig(epochs=1, batch_size=32, amp=False, channels_last=False, device="cpu", progress=False)
    torch.manual_seed(0)
    T.train(Net(seed_arch((4, 8, 8))), data, cfg, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"epochs \(stored 1, given 2\)"):
        T.train(Net(seed_arch((4, 8, 8))), data, T.TrainConfig(**{**vars(cfg), "epochs": 2}), checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="other network parameters"):
        T.train(Net(seed_arch((4, 8, 16))), data, cfg, checkpoint=tmp_path / "c.pt")
    # progress and evaluation settings may change on resume
    T.train(Net(seed_arch((4, 8, 8))), data, T.TrainConfig(**{**vars(cfg), "progress": False, "eval_every": 0}),
            checkpoint=tmp_path / "c.pt")


# --- final training ---------------------------------------------------------------------------------------------------

def test_final_train_accepts_every_kind_of_model():
    data = D.synthetic(128, 32, 32, seed=0)
    cfg = T.TrainConfig(batch_size=32, amp=False, channels_last=False, device="cpu", progress=False)
    arch = seed_arch((4, 8, 8))
    a = T.final_train(arch, data, epochs=1, config=cfg, seed=2)
    b = T.final_train(Net(arch), data, epochs=1, config=cfg, seed=2)
    c = T.final_train(lambda: Net(arch), data, epochs=1, config=cfg, seed=2)
    for other in (b, c):
        for x, y in zip(a.net.state_dict().values(), other.net.state_dict().values()): assert torch.equal(x, y)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    d = T.final_train(plain, data, epochs=1, config=cfg, seed=2)
    assert 0 <= d.test_error <= 1
    for k, v in plain.state_dict().items(): assert torch.equal(v, before[k]), "final_train must not train the user's module"
    trained = a.net
    cont = T.final_train(trained, data, epochs=1, from_scratch=False, config=cfg, seed=2)
    assert cont.net is not trained
    with pytest.raises(ValueError, match="needs a network"): T.final_train(arch, data, epochs=1, from_scratch=False)
    with pytest.raises(TypeError, match="not an nn.Module"): T.final_train(lambda: 3, data, epochs=1)
    with pytest.raises(TypeError, match="got str"): T.final_train("resnet", data, epochs=1)


def test_checkpoint_refuses_another_teacher_or_other_data(tmp_path):
    data = D.synthetic(128, 32, 32, seed=0)
    cfg = T.TrainConfig(epochs=1, batch_size=32, amp=False, channels_last=False, device="cpu", progress=False)
    torch.manual_seed(0)
    teacher = Net(seed_arch((4, 8, 8)))
    T.train(Net(seed_arch((4, 8, 8))), data, cfg, teacher=teacher, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="other teacher"):
        T.train(Net(seed_arch((4, 8, 8))), data, cfg, teacher=Net(seed_arch((4, 8, 16))), checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="other teacher"):
        T.train(Net(seed_arch((4, 8, 8))), data, cfg, checkpoint=tmp_path / "c.pt")
    with pytest.raises(ValueError, match="other training data"):
        T.train(Net(seed_arch((4, 8, 8))), D.synthetic(128, 32, 32, seed=1), cfg, teacher=teacher, checkpoint=tmp_path / "c.pt")
