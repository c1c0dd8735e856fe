"""Acceptance 1 of issue 11: the documented own-data path, end to end, on data nothing like CIFAR-10 (2 channels, 12×12,
3 classes): Data from numpy arrays, a seed for its shape, NASH, final training, export, a reload in a fresh process that
imports only torch, predictions; the exported model's test error is the trained network's. And the top-level API."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import nash_lit
from nash_lit import (
    Data,
    DataSpec,
    NashConfig,
    Net,
    ParetoConfig,
    TrainConfig,  # every name issue 11 asks for
    check_fit,
    evaluate,
    export,
    final_train,
    load_exported,
    nash,
    pareto_nash,
    predict,
    random_search,
    save_exported,
    seed_arch,
    train,
)
from nash_lit.augment import normalize

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SPEC_NAMES = {  # the names issue 11 asks for at the top level (and the peers of issue 20), and where each lives
    "Data": "data",
    "DataSpec": "data",
    "seed_arch": "arch",
    "Net": "arch",
    "TrainConfig": "training",
    "train": "training",
    "final_train": "final_training",
    "nash": "hill_climbing",
    "NashConfig": "hill_climbing",
    "random_search": "hill_climbing",
    "pareto_nash": "pareto_async",
    "ParetoConfig": "pareto",
    "export": "exporting",
    "save_exported": "exporting",
    "load_exported": "exporting",
    "check_fit": "checks",
    "nsga2": "peers",
    "tpe": "peers",
    "PeerConfig": "peers",
}
TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)

TORCH_ONLY = """
import json, sys, torch
extra = {"nash_lit.json": ""}
model = torch.export.load(sys.argv[1], extra_files=extra).module()
classes = json.loads(extra["nash_lit.json"])["classes"]
images, labels = torch.load(sys.argv[2])
predicted = model(images).argmax(1)
print(json.dumps({"error": (predicted != labels).sum().item() / len(labels), "predicted": predicted.tolist(),
                  "classes": classes, "nash_lit_modules": sorted(m for m in sys.modules if m.startswith("nash_lit"))}))
"""


def test_top_level_names():
    "`from nash_lit import ...` gives the library's own objects, each listed in __all__; the version is the package's."
    for name, module in SPEC_NAMES.items():
        assert name in nash_lit.__all__, name
        assert getattr(nash_lit, name) is getattr(importlib.import_module(f"nash_lit.{module}"), name), name
    assert all(hasattr(nash_lit, name) for name in nash_lit.__all__)
    assert nash_lit.__version__ == importlib.metadata.version("nash_lit")


def own_data(seed=0):
    "2-channel 12×12 images of 3 classes as channels-last numpy floats in [0, 1]: a pattern per class plus noise."
    rng = np.random.default_rng(seed)
    patterns = np.kron(rng.normal(size=(3, 3, 3, 2)), np.ones((4, 4, 1)))  # (3, 12, 12, 2)

    def sample(n):
        y = rng.integers(0, 3, n)
        x = np.clip(0.5 + 0.2 * patterns[y] + 0.15 * rng.normal(size=(n, 12, 12, 2)), 0, 1).astype(np.float32)
        return x, y

    (x, y), (x_test, y_test) = sample(256), sample(96)
    return Data.from_tensors(
        x, y, x_test, y_test, val_size=0.25, layout="NHWC", classes=("sand", "sea", "sky"), device="cpu"
    )


def run_torch_only(path, data, folder) -> dict:
    "The saved program's test predictions, from a fresh isolated process that imports torch and nothing else."
    torch.save((data.x_test, data.y_test), folder / "test.pt")
    out = subprocess.run(
        [sys.executable, "-I", "-c", TORCH_ONLY, str(path), str(folder / "test.pt")],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_own_data_path_end_to_end(tmp_path):
    data = own_data()
    assert (data.channels, data.size, data.n_classes) == (2, 12, 3)
    seed = seed_arch(widths=(8, 16), in_channels=data.channels, size=data.size, classes=data.n_classes)
    check_fit(seed, data)
    with pytest.raises(ValueError, match=r"in_channels=2, size=12, classes=3\)"):
        check_fit(seed_arch(), data)
    result = nash(
        seed, data, NashConfig(n_steps=1, n_child=2, n_op=2, n_epochs=1, seed_epochs=1, train=TRAIN), progress=False
    )
    assert result.net.arch.input["channels"] == 2 and result.net.arch.head["classes"] == 3
    final = final_train(result, data, epochs=2, config=TRAIN)  # a NashResult stands for its .net
    with torch.no_grad():  # the trained network's test predictions, computed here by hand, not by evaluate()
        final.net.eval()
        trained = final.net(normalize(data.x_test, data.mean, data.std)).argmax(1)
    trained_error = (trained != data.y_test).sum().item() / len(data.y_test)
    assert final.test_error == trained_error  # what final_train reports is the trained network's test error

    path = save_exported(export(final, data), tmp_path / "net.pt2")
    fresh = run_torch_only(path, data, tmp_path)
    assert fresh["nash_lit_modules"] == []  # the reload needed nothing of nash_lit
    assert fresh["classes"] == ["sand", "sea", "sky"]
    assert fresh["predicted"] == trained.tolist()  # image for image, the trained network's predictions
    assert fresh["error"] == trained_error  # the acceptance: the exported model's error is the trained one's

    labels, names = predict(load_exported(path), data.x_test)  # in-process, from the file
    assert labels.tolist() == fresh["predicted"] and names == [data.classes[k] for k in fresh["predicted"]]


def test_image_folder_classes_reach_the_file(tmp_path):
    "Data.from_dataset on an ImageFolder of grey PNGs (resized): the folder names are the exported model's classes."
    from PIL import Image
    from torchvision.datasets import ImageFolder

    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), mode="L").save(
                tmp_path / "images" / name / f"{i}.png"
            )

    def grey(p):
        with Image.open(p) as img:
            return img.convert("L")

    with pytest.warns(UserWarning, match=r"24 of 24 images resized to 8×8"):
        data = Data.from_dataset(
            ImageFolder(tmp_path / "images", loader=grey), size=8, val_size=4, test_size=4, device="cpu"
        )
    assert (data.channels, data.size, data.classes) == (1, 8, ("cats", "dogs"))
    torch.manual_seed(0)
    net = Net(seed_arch((4,), in_channels=1, size=8, classes=2))
    loaded = load_exported(save_exported(export(net, data), tmp_path / "net.pt2"))
    assert loaded.classes == ("cats", "dogs") and loaded.input_shape == (1, 8, 8)
    assert predict(loaded, data.x_test)[1][0] in ("cats", "dogs")


def test_pareto_nash_on_own_data():
    "Pareto-NASH with P0 built for the data's shape: one tiny generation; every front member takes the data."
    data = own_data()
    p0 = [seed_arch(widths=w, in_channels=2, size=12, classes=3) for w in ((16, 16, 16), (16, 32, 32))]
    config = ParetoConfig(n_gen=1, n_pc=4, n_ac=1, n_epochs=1, seed_epochs=1, recovery_epochs=0, train=TRAIN)
    front = pareto_nash(p0, data, config, progress=False).front
    assert front and all(check_fit(m.net, data) is None for m in front)
