"""nash_lit.exporting (issue 11, point 4): exported models compute the trained network's logits, capture with torch.export
and torch.jit.trace, save and reload with their class names, and refuse inputs they were not made for, clearly."""

import copy
import json
import re
import warnings

import numpy as np
import pytest
import torch

from nash_lit.arch import Net, seed_arch
from nash_lit.baselines import MobileNet
from nash_lit.data import Data
from nash_lit.exporting import META, Exported, export, load_exported, predict, save_exported
from nash_lit.morphisms import add_skip, concat_skip, deeper, scramble, wider
from nash_lit.augment import normalize
from _helpers import fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# (in_channels, size, classes, widths): other channels, sizes and class counts than CIFAR's, and CIFAR's
SHAPES = [(1, 16, 4, (4, 8)), (3, 32, 10, (4, 6, 8)), (2, 8, 3, (3,)), (1, 12, 2, (4, 4))]


def grown(in_channels, size, classes, widths, seed=0):
    "A seed grown by every kind of exact morphism (deeper, wider, add and concat skips), scrambled, in eval mode."
    torch.manual_seed(seed)
    net, rng = Net(seed_arch(widths, classes=classes, in_channels=in_channels, size=size)), np.random.default_rng(seed)
    for grow in (deeper, wider, add_skip, concat_skip, deeper, wider):
        net = grow(net, rng).net
    return scramble(net, seed=seed + 1).eval()


def images(n, c, size, seed=0):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def data_for(c, size, classes, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = [images(n, c, size, seed + k) for k in range(3)]
    y = [torch.randint(0, classes, (n,), generator=g) for _ in range(3)]
    return Data(x[0], y[0], x[1], y[1], x[2], y[2], classes=tuple(f"kind {k}" for k in range(classes)))


def quiet_trace(model, x):
    "torch.jit.trace without its warnings: deprecated in torch 2.14, and AddMerge's index tensors become constants."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, x)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}ch{s[1]}px{s[2]}cls")
def test_logits_equal_the_trained_network(shape):
    "uint8 images: the trained net's logits on normalize(x) bit for bit; x / 255 as float32 too; float64 to 1e-5."
    c, size, classes, widths = shape
    net, data = grown(*shape), data_for(c, size, classes)
    model = export(net, data)
    x = data.x_test
    with torch.no_grad():
        want = net(normalize(x, data.mean, data.std))
        assert torch.equal(model(x), want)
        assert torch.equal(model(x.float() / 255), want)
        torch.testing.assert_close(model(x.double() / 255), want, atol=1e-5, rtol=1e-5)
    assert model.classes == data.classes and model.input_shape == (c, size, size)
    assert torch.equal(model.mean, data.mean) and torch.equal(model.std, data.std)


def test_export_copies_and_leaves_the_network_alone():
    net = grown(1, 16, 4, (4, 8)).train()
    net.blocks["1"].conv.weight.requires_grad_(True)
    before = fingerprint(net)
    model = export(net, data_for(1, 16, 4))
    assert net.training and all(p.requires_grad for p in net.parameters()) and fingerprint(net) == before
    assert not model.training and not model.net.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model.net.blocks["1"].conv.weight.add_(1)
    assert fingerprint(net) == before  # a copy, not a view of the user's network


@pytest.mark.parametrize("kind", ["grown child", "mobilenet"])
def test_torch_export_and_jit_trace(kind):
    "Both capture tools work on an Exported of a grown NASH child and of a baseline, and reproduce its logits."
    if kind == "grown child":
        net, x = grown(1, 16, 4, (4, 8)), images(6, 1, 16)
        model = export(net, data_for(1, 16, 4))
    else:
        torch.manual_seed(0)
        net, x = scramble(MobileNet(0.25, classes=5)), images(6, 3, 32)
        model = export(net, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], input_shape=(3, 32, 32))
        assert model.classes == tuple(f"class {k}" for k in range(5))
    with torch.no_grad():
        want = model(x)
        program = torch.export.export(model, (x,)).module()
        traced = quiet_trace(model, x)
        other = images(6, x.shape[1], x.shape[2], seed=9)  # inputs other than the ones captured
        for captured in (program, traced):
            torch.testing.assert_close(captured(x), want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(captured(other), model(other), atol=1e-5, rtol=1e-5)


BAD_IMAGES = {  # name -> (make from good uint8 x (N, 1, 16, 16), error type, message part)
    "NHWC": (lambda x: x.permute(0, 2, 3, 1), ValueError, "x.permute(0, 3, 1, 2)"),
    "no channel axis": (lambda x: x[:, 0], ValueError, "x[:, None]"),
    "other size": (lambda x: x[:, :, :8, :8], ValueError, "resize the images to 16×16"),
    "other channels": (lambda x: x.expand(-1, 3, -1, -1), ValueError, "takes 1-channel images"),
    "single image": (lambda x: x[0], ValueError, "x[None]"),
    "int32": (lambda x: x.int(), TypeError, "uint8 (0..255) or floating point"),
    "bool": (lambda x: x > 0, TypeError, "uint8 (0..255) or floating point"),
    "0..255 floats": (
        lambda x: x.float(),
        ValueError,
        "255 for bytes stored as floats",
    ),  # 255·x would be taken silently
    "normalised floats": (lambda x: (x.float() / 255 - 0.5) / 0.25, ValueError, "look normalised"),
    "NaN": (lambda x: x.float().div(255).index_fill(0, torch.tensor([0]), float("nan")), ValueError, "NaN"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_named(name):
    make, error, message = BAD_IMAGES[name]
    model = export(grown(1, 16, 4, (4, 8)), data_for(1, 16, 4))
    x = make(images(4, 1, 16))
    with pytest.raises(error, match=re.escape(message)):
        model(x)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        model(x.numpy())


def test_float_range_is_checked_eagerly_and_never_in_a_capture(tmp_path):
    "The range check raises on eager calls only: torch.export (strict or not), jit.trace and the saved program still work."
    data = data_for(1, 16, 4)
    model = export(grown(1, 16, 4, (4, 8)), data)
    x = data.x_test.float() / 255
    with torch.no_grad():
        want = model(x)  # floats in [0, 1]: fine
        for capture in (
            lambda: torch.export.export(model, (x,)).module(),
            lambda: torch.export.export(model, (x,), strict=True).module(),
            lambda: quiet_trace(model, x),
        ):
            captured = capture()
            assert torch.equal(captured(x), want)
            captured(x * 255)  # a captured graph cannot raise on values: it computes (predict checks them)
    with pytest.raises(
        ValueError, match=r"the model's input: float images must lie in \[0, 1\].*255 for bytes stored as floats"
    ):
        model(x * 255)
    loaded = load_exported(save_exported(model, tmp_path / "f.pt2", example=x[:4]))
    with torch.no_grad():
        assert torch.equal(loaded(x), want)
    with pytest.raises(ValueError, match="255 for bytes stored as floats"):
        predict(loaded, data.x_test.float())
    with pytest.raises(ValueError, match="look normalised"):  # an example batch is checked as an input is
        save_exported(model, tmp_path / "g.pt2", example=x - 0.5)


def test_predict_takes_what_data_takes():
    "Tensors and arrays; uint8, integers 0..255, floats in [0, 1]; (N, H, W) for one channel; NHWC with layout."
    data = data_for(1, 16, 4)
    model = export(grown(1, 16, 4, (4, 8)), data)
    x = data.x_test
    with torch.no_grad():
        want = model(x).argmax(1)
    forms = {
        "NCHW": [x, x.numpy(), x.long(), x.float() / 255, (x.double() / 255).numpy(), x[:, 0], x[:, 0].numpy()],
        "NHWC": [x.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1).numpy()],
    }
    for layout, given in forms.items():
        for images in given:
            labels, names = predict(model, images, layout=layout, batch_size=7)
            assert torch.equal(labels, want), (layout, type(images), images.dtype)
    assert names == [data.classes[k] for k in want.tolist()] and labels.dtype == torch.int64
    assert predict(model, x[:0])[1] == []


PREDICT_MISTAKES = {  # name -> (images from good uint8 x (N, 1, 16, 16), error type, message part)
    "0..255 floats": (lambda x, d: x.float(), ValueError, "255 for bytes stored as floats"),
    "normalised": (lambda x, d: normalize(x, d.mean, d.std), ValueError, "look normalised"),
    "normalised numpy": (lambda x, d: normalize(x, d.mean, d.std).numpy(), ValueError, "look normalised"),
    "NHWC given as NCHW": (lambda x, d: x.permute(0, 2, 3, 1).expand(-1, -1, -1, 3), ValueError, "layout='NHWC'"),
    "other size": (lambda x, d: x[:, :, :8, :8], ValueError, "resize the images to 16×16"),
    "three channels": (lambda x, d: x.expand(-1, 3, -1, -1), ValueError, "takes 1-channel images"),
    "ints above 255": (lambda x, d: x.long() * 2, ValueError, "integer images must lie in 0..255"),
    "bool": (lambda x, d: x > 0, ValueError, "not images"),
    "a list": (lambda x, d: x.tolist(), TypeError, "torch tensor or a numpy array"),
}


@pytest.mark.parametrize("name", list(PREDICT_MISTAKES))
def test_predict_mistakes_named(name):
    "The issue's silent failures (float images on the 0..255 scale, normalised ones) and others, each named."
    make, error, message = PREDICT_MISTAKES[name]
    data = data_for(1, 16, 4)
    model = export(grown(1, 16, 4, (4, 8)), data)
    with pytest.raises(error, match=re.escape(message)):
        predict(model, make(data.x_test, data))


@pytest.mark.parametrize("name", list(PREDICT_MISTAKES))
def test_predict_mistakes_named_for_a_loaded_program_too(name, tmp_path):
    "A program from load_exported gets the same messages, not its guards' (Guard failed: x.size()[1] == 1)."
    make, error, message = PREDICT_MISTAKES[name]
    data = data_for(1, 16, 4)
    loaded = load_exported(save_exported(export(grown(1, 16, 4, (4, 8)), data), tmp_path / "net.pt2"))
    with pytest.raises(error, match=re.escape(message)):
        predict(loaded, make(data.x_test, data))


def test_predict_refuses_a_single_image_and_checks_batch_size(tmp_path):
    "One (C, H, W) image would be read as C one-channel images, one (H, W, C) array as H: refused with x[None]."
    data = data_for(3, 8, 5)
    model = export(grown(3, 8, 5, (4,)), data)
    loaded = load_exported(save_exported(model, tmp_path / "net.pt2"))
    x = data.x_test
    for m in (model, loaded):
        with pytest.raises(
            ValueError, match=re.escape("one image (C, H, W), but predict takes a batch; a single image? use x[None]")
        ):
            predict(m, x[0])
        with pytest.raises(
            ValueError, match=re.escape("one channels-last image (H, W, C)") + ".*use x\\[None\\] with layout='NHWC'"
        ):
            predict(m, x[0].permute(1, 2, 0).numpy())
        assert torch.equal(predict(m, x[0][None])[0], predict(m, x[:1])[0])  # the fix works
        assert torch.equal(predict(m, x[0].permute(1, 2, 0).numpy()[None], layout="NHWC")[0], predict(m, x[:1])[0])
        for bad, kind in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
            with pytest.raises(kind, match=r"predict\.batch_size must"):
                predict(m, x, batch_size=bad)
    grey = data_for(1, 16, 4)
    grey_model = export(grown(1, 16, 4, (4, 8)), grey)
    one = grey.x_test[:1]
    assert torch.equal(
        predict(grey_model, one[0])[0], predict(grey_model, one)[0]
    )  # (1, H, W): one grey image either way
    with pytest.raises(ValueError, match="layout='NHWC'"):
        predict(grey_model, one[0].permute(1, 2, 0))  # (H, W, 1)
    assert len(predict(grey_model, grey.x_test[:3, 0])[0]) == 3  # (N, H, W): a batch of grey images, as documented


def test_loaded_program_tolerates_eval(tmp_path):
    "A loaded program is in inference mode: .eval() and .train(False) change nothing, .train() is refused with why."
    data = data_for(1, 16, 4)
    model = export(grown(1, 16, 4, (4, 8)), data)
    path = save_exported(model, tmp_path / "net.pt2")
    loaded = load_exported(path)
    with torch.no_grad():
        want = loaded(data.x_test)
        assert loaded.eval() is loaded and loaded.train(False) is loaded
        assert torch.equal(loaded(data.x_test), want)
    with pytest.raises(NotImplementedError, match="inference mode only"):
        loaded.train()
    assert torch.equal(predict(loaded.eval(), data.x_test)[0], want.argmax(1))
    with pytest.raises(NotImplementedError):  # torch alone: as load_exported's docstring says, even eval() is refused
        torch.export.load(path).module().eval()


def test_predict_needs_classes():
    data = data_for(1, 16, 4)
    model = export(grown(1, 16, 4, (4, 8)), data)
    with pytest.raises(TypeError, match="predict takes an Exported"):
        predict(model.net, data.x_test)


EXPORT_MISTAKES = {  # name -> (call(net, data), error type, message part)
    "an Arch": (lambda net, data: export(net.arch, data), TypeError, "not an Arch"),
    "not a module": (lambda net, data: export("net.pt", data), TypeError, "export takes an nn.Module"),
    "no data, no stats": (lambda net, data: export(net), ValueError, "pass the Data it was trained on"),
    "only mean": (lambda net, data: export(net, mean=[0.5]), ValueError, "both mean= and std="),
    "data of another kind": (lambda net, data: export(net, data.x_train), TypeError, "data must be a Data"),
    "too few classes": (
        lambda net, data: export(net, data, classes=("a", "b")),
        ValueError,
        "classes has 2 names but the network has 4 outputs",
    ),
    "classes as a string": (lambda net, data: export(net, data, classes="abcd"), TypeError, "sequence of names"),
    "mean per CIFAR channel": (
        lambda net, data: export(net, mean=[0.5] * 3, std=[0.2] * 3),
        ValueError,
        "mean has 3 values but the network takes 1-channel images",
    ),
    "zero std": (lambda net, data: export(net, mean=[0.5], std=[0.0]), ValueError, "std must be > 0"),
    "nan mean": (lambda net, data: export(net, mean=[float("nan")], std=[0.2]), ValueError, "mean must be finite"),
    "data of another size": (
        lambda net, data: export(net, data_for(1, 8, 4)),
        ValueError,
        r"disagrees: the network's input node \(1, 16, 16\), the data \(1, 8, 8\)",
    ),
    "data of other channels": (lambda net, data: export(net, data_for(3, 16, 4)), ValueError, "disagrees"),
}


@pytest.mark.parametrize("name", list(EXPORT_MISTAKES))
def test_export_mistakes_named(name):
    call, error, message = EXPORT_MISTAKES[name]
    with pytest.raises(error, match=message):
        call(grown(1, 16, 4, (4, 8)), data_for(1, 16, 4))


def test_export_takes_a_result_and_counts_outputs_of_any_module():
    net, data = grown(1, 16, 4, (4, 8)), data_for(1, 16, 4)

    class Result:  # what nash() and final_train() return: the network is `.net`
        pass

    result = Result()
    result.net = net
    assert fingerprint(export(result, data).net) == fingerprint(net)
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="classes has 4 names but the network has 3 outputs"):
        export(plain, data)
    assert export(plain, data, classes=("a", "b", "c")).classes == ("a", "b", "c")


def test_save_and_load(tmp_path):
    "The file holds the program and its metadata: class names, statistics, input dtype and shape, the architecture."
    data = data_for(1, 16, 4)
    net = grown(1, 16, 4, (4, 8))
    model = export(net, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # saving warns about nothing
        path = save_exported(model, tmp_path / "net.pt2")
    loaded = load_exported(path)
    assert loaded.classes == data.classes and loaded.input_shape == (1, 16, 16) and loaded.input_dtype == "uint8"
    assert loaded.info["mean"] == data.mean.tolist() and loaded.info["std"] == data.std.tolist()
    assert loaded.info["arch"] == json.loads(net.arch.to_json())
    extra = {META: ""}  # the torch-only reading of the names
    torch.export.load(path, extra_files=extra)
    assert json.loads(extra[META])["classes"] == list(data.classes)
    with torch.no_grad():
        want = model(data.x_test)
        for n in (1, 2, 5, 40):  # the batch size is free, one included (same batch both sides: kernels depend on it)
            assert torch.equal(loaded(data.x_test[:n]), model(data.x_test[:n]))
    assert torch.equal(predict(loaded, data.x_test.float() / 255)[0], want.argmax(1))
    with pytest.raises(RuntimeError, match="dtype mismatch"):
        loaded(data.x_test.float() / 255)
    with pytest.raises(Exception, match=r"x.size\(\)\[1\] == 1"):
        loaded(data.x_test.expand(-1, 3, -1, -1))


def test_float_program(tmp_path):
    data = data_for(3, 8, 5)
    model = export(grown(3, 8, 5, (4,)), data)
    loaded = load_exported(save_exported(model, tmp_path / "f.pt2", example=torch.rand(1, 3, 8, 8)))
    assert loaded.input_dtype == "float32"
    with torch.no_grad():
        assert torch.equal(loaded(data.x_test.float() / 255), model(data.x_test))
    assert torch.equal(predict(loaded, data.x_test)[0], predict(model, data.x_test)[0])


def test_baseline_saves_without_an_arch(tmp_path):
    torch.manual_seed(0)
    model = export(
        scramble(MobileNet(0.1, classes=3)),
        mean=[0.5] * 3,
        std=[0.25] * 3,
        classes=("a", "b", "c"),
        input_shape=(3, 32, 32),
    )
    loaded = load_exported(save_exported(model, tmp_path / "m.pt2"))
    assert loaded.info["arch"] is None and loaded.classes == ("a", "b", "c")
    x = images(3, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


def test_save_and_load_mistakes(tmp_path):
    model = export(grown(1, 16, 4, (4, 8)), data_for(1, 16, 4))
    with pytest.raises(TypeError, match=r"save_exported takes an Exported.*export\(net, data\)"):
        save_exported(model.net, tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="images must have the shape"):
        save_exported(model, tmp_path / "x.pt2", example=images(2, 3, 16))
    shapeless = Exported(copy.deepcopy(model.net), model.mean, model.std, model.classes)
    with pytest.raises(ValueError, match="pass an example batch"):
        save_exported(shapeless, tmp_path / "x.pt2")
    with pytest.raises(FileNotFoundError, match="missing.pt2.*save_exported"):
        load_exported(tmp_path / "missing.pt2")
    (tmp_path / "junk.pt2").write_text("not a program")
    with pytest.raises(ValueError, match="not a torch.export file"):
        load_exported(tmp_path / "junk.pt2")
    foreign = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(foreign, tmp_path / "foreign.pt2")
    with pytest.raises(ValueError, match="without nash_lit.json"):
        load_exported(tmp_path / "foreign.pt2")
