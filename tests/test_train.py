"Training pipeline (nash_lit.training): augmentation, frozen layers, divergence, data loading, determinism, bad input."

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
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nash_lit import images as C
from nash_lit import data as D
from nash_lit.arch import Net, seed_arch

import nash_lit.augment as A
import nash_lit.final_training as FT
import nash_lit.training as T

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
    out = A.crop_flip(batch, g)
    assert not torch.equal(out[0], out[1])
    assert len({o.numpy().tobytes() for o in out}) > 8  # 81 crops x 2 flips: nearly all distinct
    cut = A.cutout(torch.ones(16, 3, 32, 32), g)
    assert not torch.equal(cut[0], cut[1])
    cfg = T.TrainConfig(mixup_alpha=0, **CPU)
    x, *_ = A.augment(batch, torch.zeros(16, dtype=torch.long), torch.full((3,), 0.5), torch.full((3,), 0.25), g, cfg)
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert not torch.equal(x[0], x[1])


def test_crop_flip_is_a_shifted_window():
    g = torch.Generator().manual_seed(1)
    img = torch.arange(1, 3 * 32 * 32 + 1).reshape(1, 3, 32, 32)
    assert torch.equal(A.crop_flip(img, g, pad=0, flip=False), img)
    out = A.crop_flip(img.repeat(64, 1, 1, 1), g, pad=4, flip=True)
    for o in out:  # every output is (a flip of) a shift of the image with zeros shifted in
        for cand in (o, o.flip(-1)):
            nz = cand[0].nonzero()
            r0, c0 = nz.min(0).values.tolist()
            r1, c1 = (nz.max(0).values + 1).tolist()
            window = cand[:, r0:r1, c0:c1]
            src_r, src_c = (window[0, 0, 0].item() - 1) // 32, (window[0, 0, 0].item() - 1) % 32
            if torch.equal(window, img[0, :, src_r : src_r + r1 - r0, src_c : src_c + c1 - c0]):
                break
        else:
            raise AssertionError("crop is not a window of the image")


def test_cutout_and_mixup():
    g = torch.Generator().manual_seed(2)
    cut = A.cutout(torch.ones(256, 3, 32, 32), g, size=16)
    zeroed = (cut[:, 0] == 0).sum((1, 2))
    assert zeroed.max() == 256 and zeroed.min() >= 64
    assert torch.equal(A.cutout(torch.ones(2, 3, 8, 8), g, size=0), torch.ones(2, 3, 8, 8))
    x, y = torch.randn(32, 3, 4, 4), torch.arange(32)
    xm, ya, yb, lam = A.mixup(x, y, g, alpha=1.0)
    assert 0 <= lam <= 1 and torch.equal(ya, y) and sorted(yb.tolist()) == list(range(32))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[yb], atol=1e-6)
    assert A.mixup(x, y, g, alpha=0)[3] == 1.0


def test_normalize_uses_training_statistics(data):
    x = A.normalize(data.x_train, data.mean, data.std)
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
    assert changed == set(trainable) | {
        "blocks.3.bn.running_mean",
        "blocks.3.bn.running_var",
        "blocks.3.bn.num_batches_tracked",
    }
    assert {k: p.requires_grad for k, p in net.named_parameters()} == flags


def test_frozen_bn_layer_keeps_statistics_when_only_its_conv_trains(data):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU), trainable=["blocks.1.conv.weight"])
    after = net.state_dict()
    assert {k for k in before if not torch.equal(before[k], after[k])} == {"blocks.1.conv.weight"}


def test_train_accepts_any_module(data):
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    h = T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU))
    assert 0 <= h[0]["val_error"] <= 1
    assert 0 <= T.evaluate(net, data, "test") <= 1


def test_divergence_raises_the_dedicated_exception(data):
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(T.TrainingDiverged, match="loss became"):
        T.train(linear, data, T.TrainConfig(epochs=1, batch_size=32, lr_max=1e30, **CPU))
    net = small_net()
    with torch.no_grad():
        net.blocks["1"].conv.weight.fill_(float("inf"))
    with pytest.raises(T.TrainingDiverged):
        T.train(net, data, T.TrainConfig(epochs=1, batch_size=64, **CPU))
    assert issubclass(T.TrainingDiverged, RuntimeError)


def test_evaluate_restores_mode_and_counts_errors(data):
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(10))

        def forward(self, x):
            return self.w.expand(len(x), 10) + nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10)

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
    for name in C._BATCHES:
        d = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"batch_label": name.encode(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    if as_tar:
        with tarfile.open(root / D.ARCHIVE, "w:gz") as tar:
            tar.add(folder, arcname=D.FOLDER)
        for p in folder.iterdir():
            p.unlink()
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
    assert a.classes == D.CLASSES  # CIFAR-10's names, given explicitly by cifar10()
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
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        D.cifar10(root, device="cpu")
    msg = str(e.value)
    assert str(root.resolve()) in msg and D.ARCHIVE in msg and "download failed" in msg
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        D.read_cifar10(root, download=False)


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_input_gives_clear_value_errors(data):
    net = small_net()
    with pytest.raises(ValueError, match="unknown device"):
        T.train(net, data, T.TrainConfig(device="gpu0", progress=False))
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        T.TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match="batch_size"):
        T.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="not among the network's parameters"):
        T.train(net, data, T.TrainConfig(**CPU), trainable=["blocks.1.conv.weight", "nope"])
    with pytest.raises(ValueError, match="empty"):
        T.train(net, data, T.TrainConfig(**CPU), trainable=[])
    with pytest.raises(ValueError, match="unknown split"):
        T.evaluate(net, data, "validation")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            D.default_device("cuda")
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
    history = T.train(
        student, data, T.TrainConfig(**{**cfg.__dict__, "bn_eval": True, "weight_decay": 0.0}), teacher=teacher
    )
    assert history[0]["loss"] < 1e-3  # a copy of the teacher already matches it: the loss is ~0, and finite
    assert teacher.training  # the teacher's mode is restored
    for k, v in student.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k


# --- epoch checkpoints ------------------------------------------------------------------------------------------------

TRAIN_SCRIPT = Path(__file__).with_name("_train_run.py")


def _start_training(checkpoint, out):
    env = dict(os.environ, PYTHONPATH=str(TRAIN_SCRIPT.parent.parent), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), str(checkpoint), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _checkpoint_epoch(path) -> int:
    if not path.exists():
        return 0
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
        while _checkpoint_epoch(ckpt) < wait_for and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
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
        T.train(
            Net(seed_arch((4, 8, 8))), data, T.TrainConfig(**{**vars(cfg), "epochs": 2}), checkpoint=tmp_path / "c.pt"
        )
    with pytest.raises(ValueError, match="other network parameters"):
        T.train(Net(seed_arch((4, 8, 16))), data, cfg, checkpoint=tmp_path / "c.pt")
    # progress and evaluation settings may change on resume
    T.train(
        Net(seed_arch((4, 8, 8))),
        data,
        T.TrainConfig(**{**vars(cfg), "progress": False, "eval_every": 0}),
        checkpoint=tmp_path / "c.pt",
    )


# --- final training ---------------------------------------------------------------------------------------------------


def test_final_train_accepts_every_kind_of_model():
    data = D.synthetic(128, 32, 32, seed=0)
    cfg = T.TrainConfig(batch_size=32, amp=False, channels_last=False, device="cpu", progress=False)
    arch = seed_arch((4, 8, 8))
    a = FT.final_train(arch, data, epochs=1, config=cfg, seed=2)
    b = FT.final_train(Net(arch), data, epochs=1, config=cfg, seed=2)
    c = FT.final_train(lambda: Net(arch), data, epochs=1, config=cfg, seed=2)
    for other in (b, c):
        for x, y in zip(a.net.state_dict().values(), other.net.state_dict().values()):
            assert torch.equal(x, y)
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)
    )
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    d = FT.final_train(plain, data, epochs=1, config=cfg, seed=2)
    assert 0 <= d.test_error <= 1
    for k, v in plain.state_dict().items():
        assert torch.equal(v, before[k]), "final_train must not train the user's module"
    trained = a.net
    cont = FT.final_train(trained, data, epochs=1, from_scratch=False, config=cfg, seed=2)
    assert cont.net is not trained
    with pytest.raises(ValueError, match="needs a network"):
        FT.final_train(arch, data, epochs=1, from_scratch=False)
    with pytest.raises(TypeError, match="not an nn.Module"):
        FT.final_train(lambda: 3, data, epochs=1)
    with pytest.raises(TypeError, match="got str"):
        FT.final_train("resnet", data, epochs=1)


def test_final_train_takes_a_search_result_by_its_net():
    "A NashResult, a front member or a FinalResult stands for its .net: from scratch, its architecture; else its weights."
    data = D.synthetic(128, 32, 32, seed=0)
    cfg = T.TrainConfig(batch_size=32, amp=False, channels_last=False, device="cpu", progress=False)
    arch = seed_arch((4, 8, 8))

    class Found:  # duck-typed: train.py knows nothing of nash or pareto
        def __init__(self, net):
            self.net = net

    trained = FT.final_train(arch, data, epochs=1, config=cfg, seed=2)
    again = FT.final_train(Found(trained.net), data, epochs=1, config=cfg, seed=2)  # from scratch: the arch's training
    assert all(torch.equal(a, b) for a, b in zip(trained.net.state_dict().values(), again.net.state_dict().values()))
    before = {k: v.clone() for k, v in trained.net.state_dict().items()}
    cont = FT.final_train(trained, data, epochs=1, from_scratch=False, config=cfg, seed=2)  # a FinalResult, continued
    assert cont.net is not trained.net and all(torch.equal(v, before[k]) for k, v in trained.net.state_dict().items())
    assert not all(torch.equal(v, before[k]) for k, v in cont.net.state_dict().items())
    with pytest.raises(TypeError, match=r"a result with a \.net"):
        FT.final_train(Found("resnet"), data, epochs=1)


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
        T.train(
            Net(seed_arch((4, 8, 8))),
            D.synthetic(128, 32, 32, seed=1),
            cfg,
            teacher=teacher,
            checkpoint=tmp_path / "c.pt",
        )


def test_checkpoint_tells_data_apart_by_its_pixels_and_names_a_damaged_file(tmp_path):
    "Same labels and sizes, other pixels (e.g. resized another way): refused; a damaged file: named, with the fix."
    data = D.synthetic(128, 32, 32, seed=0)
    cfg = T.TrainConfig(epochs=1, batch_size=32, amp=False, channels_last=False, device="cpu", progress=False)
    path = tmp_path / "c.pt"
    torch.manual_seed(0)
    T.train(Net(seed_arch((4, 8, 8))), data, cfg, checkpoint=path)
    repainted = replace(data, x_train=data.x_train.flip(3))
    with pytest.raises(ValueError, match="other training data"):
        T.train(Net(seed_arch((4, 8, 8))), repainted, cfg, checkpoint=path)
    # a checkpoint written before the images were hashed (no sha256 in its key) resumes as it did then
    blob = torch.load(path, weights_only=True)
    del blob["key"]["data"]["sha256"]
    torch.save(blob, path)
    history = T.train(Net(seed_arch((4, 8, 8))), data, cfg, checkpoint=path)
    assert len(history) == 1  # finished: the stored history, nothing trained
    for damage in (b"", b"not a checkpoint", path.read_bytes()[: len(path.read_bytes()) // 2]):
        path.write_bytes(damage)
        with pytest.raises(ValueError, match=r"c\.pt: it cannot be read .*delete the file to start again"):
            T.train(Net(seed_arch((4, 8, 8))), data, cfg, checkpoint=path)


# --- does the network fit the data? (issue 11) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gray16():
    "A 1-channel 16x16 dataset with 4 classes."
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 16, 16), dtype=torch.uint8, generator=g)
    return D.Data.from_tensors(x, torch.arange(96) % 4, device="cpu")


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _unchanged(net, before):
    return all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_check_fit_names_channels_size_and_classes(gray16):
    with pytest.raises(ValueError) as e:
        T.check_fit(seed_arch(), gray16)
    msg = str(e.value)
    for part in (
        "channels: the network takes 3, the data has 1",
        "size: the network takes 32×32 images, the data has 16×16",
        "classes: the network has 10, the data has 4",
        "seed_arch(..., in_channels=1, size=16, classes=4)",
    ):
        assert part in msg, msg
    with pytest.raises(ValueError, match=r"does not fit the data: classes: the seed has 10, the data has 4\. Fix"):
        T.check_fit(Net(seed_arch((4, 8, 8), in_channels=1, size=16)), gray16, name="the seed")
    T.check_fit(seed_arch((4, 8, 8), in_channels=1, size=16, classes=4), gray16)  # fits
    T.check_fit(Net(seed_arch((4, 8, 8), in_channels=1, size=16, classes=4)), gray16)


def test_check_fit_runs_one_forward_for_any_other_module(gray16):
    fits = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)).train()
    before = _state(fits)
    T.check_fit(fits, gray16)
    assert fits.training and _unchanged(fits, before)  # eval mode for the check, no gradient, mode restored
    with pytest.raises(ValueError, match=r"maps 2 images to \(2, 10\), but the data has 4 classes"):
        T.check_fit(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)), gray16)
    with pytest.raises(ValueError, match=r"cannot take the data's images.*1 channels, 16×16.*RuntimeError"):
        T.check_fit(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), gray16)
    with pytest.raises(TypeError, match="check_fit takes a Data"):
        T.check_fit(fits, gray16.x_train)
    one = D.Data(gray16.x_train[:1], gray16.y_train[:1], gray16.x_val, gray16.y_val, gray16.x_test, gray16.y_test)
    with pytest.raises(ValueError, match=r"maps 1 image to \(1, 10\)"):  # the data has one training image, not 2
        T.check_fit(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)), one)
    with pytest.raises(TypeError, match="must be an Arch or an nn.Module"):
        T.check_fit("resnet", gray16)


def test_train_refuses_a_network_that_does_not_fit_before_any_epoch(gray16, tmp_path):
    net = Net(seed_arch((4, 8, 8)))  # built for CIFAR-10: 3 channels, 32x32, 10 classes
    before = _state(net)
    with pytest.raises(ValueError, match="channels: the network takes 3.*size: .*classes: the network has 10"):
        T.train(net, gray16, T.TrainConfig(epochs=1, **CPU), checkpoint=tmp_path / "c.pt")
    assert _unchanged(net, before) and not (tmp_path / "c.pt").exists()
    fits = Net(seed_arch((4, 8, 8), in_channels=1, size=16, classes=4))
    teacher = Net(seed_arch((4, 8, 8)))
    with pytest.raises(ValueError, match="the teacher does not fit the data"):
        T.train(fits, gray16, T.TrainConfig(epochs=1, **CPU), teacher=teacher)
    with pytest.raises(TypeError, match=r"build one with Net\(arch\)"):
        T.train(seed_arch(), gray16)
    with pytest.raises(TypeError, match="train takes a Data"):
        T.train(fits, D.DataSpec.wrap(gray16))
    assert len(T.train(fits, gray16, T.TrainConfig(epochs=1, batch_size=32, **CPU))) == 1  # and a fitting one trains


# --- augmentation sized to the images ------------------------------------------------------------------------------


def test_crop_and_cutout_default_to_the_image_size():
    cfg = T.TrainConfig()
    assert (cfg.crop_pad, cfg.cutout) == (None, None)
    assert (cfg.for_size(32).crop_pad, cfg.for_size(32).cutout) == (4, 16)  # CIFAR-10: the paper's, exactly
    assert (cfg.for_size(16).crop_pad, cfg.for_size(16).cutout) == (2, 8)
    assert (cfg.for_size((16, 24)).crop_pad, cfg.for_size((16, 24)).cutout) == (2, 8)  # the shorter side counts
    assert cfg.for_size(16).for_size(32).cutout == 8  # resolved values stay
    assert T.TrainConfig(cutout=0, crop_pad=3).for_size(16).cutout == 0
    g = torch.Generator().manual_seed(0)
    x, *_ = A.augment(
        torch.full((64, 1, 16, 16), 200, dtype=torch.uint8),
        torch.zeros(64, dtype=torch.long),
        torch.full((1,), 0.5),
        torch.full((1,), 0.25),
        g,
        T.TrainConfig(mixup_alpha=0, crop_pad=0, flip=False),
    )
    assert (x[:, 0] == 0).sum((1, 2)).max() == 8 * 8  # Cutout 8, not CIFAR's 16, on 16x16 images


def test_explicit_augmentation_that_cannot_apply_is_refused_before_training(gray16):
    net = Net(seed_arch((4, 8, 8), in_channels=1, size=16, classes=4))
    before = _state(net)
    with pytest.raises(
        ValueError, match=r"TrainConfig\.cutout=20 cannot apply to 16×16 images.*cutout=None \(scaled: 8\)"
    ):
        T.train(net, gray16, T.TrainConfig(cutout=20, **CPU))
    with pytest.raises(ValueError, match=r"TrainConfig\.crop_pad=16 cannot apply to 16×16 images"):
        T.train(net, gray16, T.TrainConfig(crop_pad=16, **CPU))
    with pytest.raises(
        ValueError,
        match=r"TrainConfig\.cutout=16 cannot apply to 16×16 images: the square must be "
        r"smaller than the image's side \(16\).*cutout=None \(scaled: 8\)",
    ):
        T.train(
            net, gray16, T.TrainConfig(cutout=16, **CPU)
        )  # the issue's Cutout 16 on 16×16 images: whole images blank
    with pytest.raises(ValueError, match=r"cutout=12 cannot apply to 12×20 images.*\(12\)"):
        T.TrainConfig(cutout=12).for_size((12, 20))  # the shorter side counts
    assert _unchanged(net, before)
    T.train(
        net, gray16, T.TrainConfig(epochs=1, cutout=15, crop_pad=15, batch_size=32, **CPU)
    )  # the largest that apply


def test_the_checkpoint_key_holds_the_resolved_sizes(gray16, data, tmp_path):
    net = lambda: Net(seed_arch((4, 8, 8), in_channels=1, size=16, classes=4))
    cfg = T.TrainConfig(epochs=1, batch_size=32, amp=False, channels_last=False, **CPU)
    T.train(net(), gray16, cfg, checkpoint=tmp_path / "g.pt")
    key = torch.load(tmp_path / "g.pt", map_location="cpu", weights_only=True)["key"]["config"]
    assert (key["crop_pad"], key["cutout"]) == (2, 8)
    T.train(net(), gray16, replace(cfg, crop_pad=2, cutout=8), checkpoint=tmp_path / "g.pt")  # the same training
    with pytest.raises(ValueError, match=r"cutout \(stored 8, given 4\)"):
        T.train(net(), gray16, replace(cfg, cutout=4), checkpoint=tmp_path / "g.pt")
    T.train(small_net(), data, cfg, checkpoint=tmp_path / "c.pt")  # on CIFAR's 32x32: the key of before issue 11
    key = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)["key"]["config"]
    assert (key["crop_pad"], key["cutout"]) == (4, 16)


# --- TrainConfig: one message per field ------------------------------------------------------------------------------

FIELDS = [f.name for f in fields(T.TrainConfig)]
BAD = dict(
    epochs=1.5,
    batch_size=0,
    lr_max=-1,
    momentum=1.0,
    nesterov=1,
    weight_decay=float("nan"),
    crop_pad=-1,
    flip="yes",
    cutout=2.0,
    mixup_alpha=-0.5,
    amp="auto",
    channels_last=0,
    device="gpu",
    seed=-3,
    eval_every=True,
    eval_batch_size=0,
    progress=None,
    bn_eval="no",
    grad_clip=float("inf"),
)


def _names_only(message: str, name: str) -> bool:
    "Whether `message` names the field `name` and no other field of TrainConfig."
    import re

    return f"TrainConfig.{name}" in message and not [o for o in FIELDS if o != name and re.search(rf"\b{o}\b", message)]


def test_every_field_is_checked_at_construction_with_a_message_naming_only_it():
    assert len(FIELDS) == 19 and set(BAD) == set(FIELDS)
    for name, value in BAD.items():
        with pytest.raises((TypeError, ValueError)) as e:
            T.TrainConfig(**{name: value})
        assert _names_only(str(e.value), name), (name, str(e.value))


def test_the_issues_examples_each_name_one_field():
    for name, value, text in (
        ("lr_max", -1, "TrainConfig.lr_max must be > 0, got -1"),
        ("lr_max", 0, "lr_max must be > 0"),
        ("epochs", 1.5, "TrainConfig.epochs must be an int, got 1.5"),
        ("device", "gpu", "TrainConfig.device: unknown device 'gpu'"),
    ):
        with pytest.raises((TypeError, ValueError)) as e:
            T.TrainConfig(**{name: value})
        assert text in str(e.value) and _names_only(str(e.value), name), str(e.value)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        T.TrainConfig(momentum=0)
    assert T.TrainConfig(momentum=0, nesterov=False).momentum == 0


def test_configs_stay_plain_values_for_replace_asdict_and_json():
    cfg = T.TrainConfig(epochs=np.int64(3), grad_clip=1, amp=np.bool_(False), device=torch.device("cpu"))
    assert (type(cfg.epochs), type(cfg.grad_clip), type(cfg.amp), cfg.device) == (int, float, bool, "cpu")
    assert json.loads(json.dumps(asdict(cfg))) == asdict(cfg)
    assert T.as_train_config(asdict(cfg)) == cfg and T.as_train_config(json.loads(json.dumps(asdict(cfg)))) == cfg
    assert replace(cfg, epochs=5).epochs == 5
    with pytest.raises(ValueError, match="TrainConfig.epochs must be >= 0"):
        replace(cfg, epochs=-1)
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['lr'\]"):
        T.as_train_config({"lr": 0.1})
    assert T.TrainConfig(device="cuda:1").device == "cuda:1"  # a name only: no GPU needed to make the config


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_when_train_starts(data, tmp_path):
    cfg = T.TrainConfig(device="cuda", epochs=1, progress=False)  # made without error: the name is valid
    net = small_net()
    before = _state(net)
    with pytest.raises(ValueError, match=r"TrainConfig\.device='cuda' cannot be used here: .*CUDA is not available"):
        T.train(net, data, cfg, checkpoint=tmp_path / "c.pt")
    assert _unchanged(net, before) and not (tmp_path / "c.pt").exists()
    with pytest.raises(ValueError, match="CUDA is not available"):
        FT.final_train(seed_arch((4, 8, 8)), data, 1, config=cfg)


def test_final_train_checks_its_own_arguments(data):
    arch = seed_arch((4, 8, 8))
    for kwargs, text in (
        (dict(epochs=1.5), "final_train.epochs must be an int"),
        (dict(epochs=-1), "final_train.epochs must be >= 0"),
        (dict(seed=-1), "final_train.seed must be >= 0"),
        (dict(from_scratch="yes"), "final_train.from_scratch must be a bool"),
    ):
        with pytest.raises((TypeError, ValueError), match=text.replace(".", r"\.")):
            FT.final_train(arch, data, **kwargs)
    no_test = D.Data(data.x_train, data.y_train, data.x_val, data.y_val, data.x_test[:0], data.y_test[:0])
    with pytest.raises(ValueError, match="final_train: the data has no test images"):
        FT.final_train(arch, no_test, 1)
    with pytest.raises(ValueError, match="final_train.config must be a TrainConfig"):
        FT.final_train(arch, data, 1, config=3)
    with pytest.raises(TypeError, match="final_train takes a Data"):
        FT.final_train(arch, "cifar10", 1)
