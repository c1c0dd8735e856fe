"Data (nash_lit.data): tensors checked on construction, built from your own tensors, arrays and datasets; specs picklable, small, cached once per process, and checked before anything loads."

import pickle

import numpy as np
import pytest
import torch

from nash_lit import data as D


def test_spec_loads_once_per_process_and_device():
    D.clear_data_cache()
    spec = D.DataSpec.synthetic(n_train=64, n_val=16, n_test=16, seed=4)
    first = spec.load("cpu")
    assert spec.load("cpu") is first
    assert spec.load(torch.device("cpu")) is first
    assert torch.equal(first.x_train, D.synthetic(64, 16, 16, seed=4).x_train)
    D.clear_data_cache()
    assert spec.load("cpu") is not first


def test_specs_pickle_small_and_compare_by_value():
    a = D.DataSpec.cifar10(val_size=5000, train_size=None)
    b = pickle.loads(pickle.dumps(a))
    assert a == b and hash(a) == hash(b)
    assert len(pickle.dumps(a)) < 500
    assert D.DataSpec.cifar10(val_size=10) != D.DataSpec.cifar10(val_size=20)


def test_wrapped_data_is_the_same_object_here_and_each_wrap_is_its_own():
    data = D.synthetic(32, 8, 8)
    spec = D.as_spec(data)
    assert spec.load("cpu") is data
    assert D.as_spec(spec) is spec
    assert D.as_spec(data) != spec
    copy = pickle.loads(pickle.dumps(spec))  # another process: the tensors travel with a wrapped spec
    assert torch.equal(copy.data.x_train, data.x_train)


def test_bad_specs_fail_before_loading():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['size_'\]"):
        D.DataSpec.synthetic(size_=3)
    with pytest.raises(ValueError, match="device is chosen by load"):
        D.DataSpec.synthetic(device="cpu")
    with pytest.raises(TypeError, match="expected a Data or a DataSpec"):
        D.as_spec("cifar10")
    with pytest.raises(TypeError, match="takes a Data"):
        D.DataSpec.wrap([1, 2])
    with pytest.raises(ValueError, match="unknown data loader 'imagenet'"):
        D.DataSpec("imagenet").load("cpu")


def test_cifar10_spec_reads_the_data_root_in_the_loading_process(tmp_path):
    "A CIFAR-10 spec made where there is no data pickles and compares; loading it is what needs the files."
    spec = D.DataSpec.cifar10(root=str(tmp_path), download=False)
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        spec.load("cpu")


def test_train_plus_val():
    data = D.synthetic(40, 10, 10)
    both = D.train_plus_val(data)
    assert len(both.y_train) == 50 and len(both.y_val) == 0
    assert torch.equal(both.mean, data.mean) and torch.equal(both.x_test, data.x_test)
    assert D.train_plus_val(both) is both


# --- Data checks its tensors (issue 11) ---------------------------------------------------------------


def _splits(x, y):
    "The same images and labels as all three splits."
    return x, y, x, y, x, y


@pytest.fixture(scope="module")
def gray():
    "A 1-channel 16x16 dataset of 4 classes as uint8 tensors."
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(12) % 4


def test_float_images_are_refused_naming_the_field_and_from_tensors(gray):
    x, y = gray
    with pytest.raises(ValueError, match=r"Data\.x_train is torch\.float32") as e:
        D.Data(*_splits(x.float() / 255, y))
    assert "Data.from_tensors converts float images in [0, 1]" in str(e.value)
    with pytest.raises(ValueError, match=r"Data\.x_test is torch\.float64"):
        D.Data(x, y, x, y, x.double() / 255, y)
    with pytest.raises(ValueError, match=r"Data\.x_train is torch\.int64.*x\.to\(torch\.uint8\)"):
        D.Data(*_splits(x.long(), y))
    with pytest.raises(TypeError, match=r"Data\.x_val must be a torch tensor.*numpy"):
        D.Data(x, y, x.numpy(), y, x, y)


def test_nhwc_images_are_refused_with_the_permute_and_the_layout_fix(gray):
    x, y = gray
    with pytest.raises(ValueError, match=r"Data\.x_train has shape \(12, 16, 16, 1\), which looks channels-last") as e:
        D.Data(*_splits(x.permute(0, 2, 3, 1), y))
    assert "x.permute(0, 3, 1, 2)" in str(e.value) and "layout='NHWC'" in str(e.value)
    with pytest.raises(ValueError, match=r"x\.unsqueeze\(1\)"):
        D.Data(*_splits(x[:, 0], y))
    # a small NCHW image is not mistaken for NHWC: axis 1 holds 3 channels
    assert D.Data(*_splits(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))).channels == 3


def test_splits_must_share_one_image_shape(gray):
    x, y = gray
    with pytest.raises(ValueError, match=r"Data\.x_val holds \(1, 8, 8\) images, x_train \(1, 16, 16\)"):
        D.Data(x, y, x[:, :, :8, :8], y, x, y)
    with pytest.raises(ValueError, match=r"Data\.x_test has 3 channel\(s\), x_train 1: .*x\.float\(\)\.mean\(1"):
        D.Data(x, y, x, y, x.repeat(1, 3, 1, 1), y)


def test_labels_must_be_int64_of_matching_length_and_in_range(gray):
    x, y = gray
    with pytest.raises(ValueError, match=r"Data\.y_train is torch\.int32.*y\.long\(\)"):
        D.Data(x, y.int(), x, y, x, y)
    with pytest.raises(ValueError, match=r"Data\.y_val has 11 labels for 12 images"):
        D.Data(x, y, x, y[:11], x, y)
    with pytest.raises(ValueError, match=r"Data\.y_test holds the label -1"):
        D.Data(x, y, x, y, x, y - 1)
    with pytest.raises(ValueError, match=r"Data\.y_train must be 1-D.*argmax"):
        D.Data(x, y[:, None], x, y, x, y)
    with pytest.raises(ValueError, match=r"Data\.y_train holds the label 3, but Data\.classes names 3 classes"):
        D.Data(*_splits(x, y), classes=("a", "b", "c"))
    high = y.clone()
    high[0] = 7
    with pytest.raises(ValueError, match=r"Data\.y_val holds the label 7, but Data\.classes names 4"):
        D.Data(x, y, x, high, x, y, classes=4)
    with pytest.raises(TypeError, match="Data.classes must be a list or tuple of class names"):
        D.Data(*_splits(x, y), classes="abcd")
    with pytest.raises(ValueError, match=r"Data\.mean needs one value per channel \(1\)"):
        D.Data(*_splits(x, y), mean=torch.zeros(3), std=torch.ones(3))


def test_default_class_names_are_never_cifars(gray):
    x, y = gray
    data = D.Data(*_splits(x, y))
    assert data.classes == ("class 0", "class 1", "class 2", "class 3")
    assert (data.n_classes, data.channels, data.size) == (4, 1, 16)
    # K = 1 + the largest label of any split, even one the training split lacks
    high = y.clone()
    high[0] = 5
    assert D.Data(x, y, x, y, x, high).n_classes == 6
    assert D.Data(*_splits(x, y), classes=10).classes[-1] == "class 9"
    assert D.Data(*_splits(x, y), classes=["w", "x", "y", "z"]).classes == ("w", "x", "y", "z")
    assert D.synthetic(16, 4, 4, classes=3).classes == ("class 0", "class 1", "class 2")
    assert D.synthetic(16, 4, 4).n_classes == 10  # synthetic names all its classes, drawn or not
    assert not set(D.Data(*_splits(x, y)).classes) & set(D.CLASSES)
    with pytest.raises(ValueError, match=r"16×12 \(H×W\), not square"):  # the networks take square images
        D.Data(*_splits(x[..., :12], y))
    moved = D.Data(*_splits(x, y), classes=("a", "b", "c", "d")).to("cpu")
    assert moved.classes == ("a", "b", "c", "d") and D.train_plus_val(moved).classes == moved.classes


# --- Data.from_tensors ------------------------------------------------------------------------------------


def test_from_tensors_converts_numpy_float_uint8_and_nhwc_alike():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 40)
    as_float = D.Data.from_tensors(pixels.astype(np.float32) / 255, labels, layout="NHWC", device="cpu")
    as_bytes = D.Data.from_tensors(pixels, labels, layout="NHWC", device="cpu")
    as_torch = D.Data.from_tensors(torch.from_numpy(pixels).permute(0, 3, 1, 2), torch.from_numpy(labels), device="cpu")
    for other in (as_bytes, as_torch):
        for s in ("train", "val", "test"):
            assert all(torch.equal(a, b) for a, b in zip(as_float.split(s), other.split(s)))
    assert as_float.x_train.dtype == torch.uint8 and as_float.y_train.dtype == torch.int64
    assert (len(as_float.y_train), len(as_float.y_val), len(as_float.y_test)) == (32, 4, 4)
    # the three splits partition the images given
    seen = torch.cat([as_float.x_train, as_float.x_val, as_float.x_test]).flatten(1)
    original = torch.from_numpy(pixels).permute(0, 3, 1, 2).flatten(1)
    assert sorted(map(bytes, seen.numpy())) == sorted(map(bytes, original.numpy()))
    assert as_float.classes == tuple(f"class {k}" for k in range(int(labels.max()) + 1))


def test_from_tensors_splits_resizes_and_takes_one_channel():
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (30, 20, 20), dtype=np.uint8), list(rng.integers(0, 3, 30))
    data = D.Data.from_tensors(x, y, x[:6], y[:6], val_size=5, size=16, classes=("a", "b", "c"), device="cpu")
    assert (data.channels, data.size, len(data.y_train), len(data.y_val), len(data.y_test)) == (1, 16, 25, 5, 6)
    assert data.classes == ("a", "b", "c")
    again = D.Data.from_tensors(x, y, x[:6], y[:6], val_size=5, size=16, device="cpu")
    assert torch.equal(again.x_val, data.x_val)  # the split is seeded
    other = D.Data.from_tensors(x, y, x[:6], y[:6], val_size=5, size=16, seed=1, device="cpu")
    assert not torch.equal(other.x_val, data.x_val)
    flat = D.Data.from_tensors(
        np.full((10, 1, 20, 30), 0.5, dtype=np.float32), np.zeros(10, dtype=int), size=8, device="cpu"
    )
    assert flat.size == 8 and (flat.x_train == 128).all()  # resizing a flat image keeps it flat


def test_from_tensors_refuses_what_it_cannot_read():
    x, y = np.zeros((20, 16, 16, 3), dtype=np.uint8), np.zeros(20, dtype=int)
    with pytest.raises(ValueError, match="looks channels-last: pass layout='NHWC'"):
        D.Data.from_tensors(x, y)
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\].*255 for bytes stored as floats"):
        D.Data.from_tensors(x.astype(np.float32) + 200, y, layout="NHWC")
    with pytest.raises(ValueError, match="integer images must lie in 0..255"):
        D.Data.from_tensors(x.astype(np.int64) - 1, y, layout="NHWC")
    with pytest.raises(ValueError, match="y has 19 labels for 20 images"):
        D.Data.from_tensors(x, y[:19], layout="NHWC")
    with pytest.raises(
        ValueError, match=r"y is an array of float64: labels are integer class indices.*y\.astype\(np\.int64\)"
    ):
        D.Data.from_tensors(x, y.astype(float), layout="NHWC")
    with pytest.raises(ValueError, match="val_size must be a fraction in"):
        D.Data.from_tensors(x, y, layout="NHWC", val_size=1.5)
    with pytest.raises(ValueError, match="test_size holds out test images when no test set is given"):
        D.Data.from_tensors(x, y, x, y, layout="NHWC", test_size=0.2)
    with pytest.raises(ValueError, match="pass x_test and y_test together"):
        D.Data.from_tensors(x, y, x, layout="NHWC")
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
        D.Data.from_tensors(x, y, layout="HWC")
    with pytest.raises(ValueError, match="size must be a positive int"):
        D.Data.from_tensors(x, y, layout="NHWC", size=0)
    with pytest.raises(ValueError, match="no training images are left"):
        D.Data.from_tensors(x, y, layout="NHWC", val_size=0.9, test_size=0.1)


# --- Data.from_dataset, image folders ------------------------------------------------------------------------


def _image_folder(root, sizes=((20, 24), (16, 16), (40, 30), (12, 18)), per_class=3, mode="RGB"):
    "An ImageFolder tree of PNGs of different sizes: classes 'cat', 'dog'."
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            h, w = sizes[(c * per_class + k) % len(sizes)]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{k}.png")
    return root


def test_from_dataset_reads_an_image_folder_resized(tmp_path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(_image_folder(tmp_path / "pets", per_class=5)))
    with pytest.warns(UserWarning, match=r"train: 7 of 10 images resized to 16×16, 7 of them not square"):
        data = D.Data.from_dataset(folder, size=16, val_size=2, test_size=2, device="cpu")
    assert data.classes == ("cat", "dog") and data.size == 16 and data.channels == 3
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (6, 2, 2)
    assert data.x_train.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"holds images of different sizes.*pass size=\.\.\."):
        D.Data.from_dataset(folder)
    test_folder = ImageFolder(str(_image_folder(tmp_path / "test", per_class=2)))
    with pytest.warns(UserWarning, match=r"resized to 8×8") as said:
        with_test = D.Data.from_dataset(folder, test_folder, size=8, val_size=0, device="cpu")
    assert sorted(str(w.message).split(":")[1].strip() for w in said) == ["test", "train"]  # one warning per split
    assert (len(with_test.y_train), len(with_test.y_val), len(with_test.y_test)) == (10, 0, 4)


def test_image_folder_loader_and_its_spec(tmp_path):
    root = _image_folder(tmp_path / "gray", mode="L")
    with pytest.warns(UserWarning, match=r"4 of 6 images resized to 16×16"):
        data = D.image_folder(root, size=16, device="cpu")
    assert data.channels == 3  # ImageFolder reads every image as RGB
    spec = D.DataSpec.image_folder(root, size=16, val_size=0.2)
    assert pickle.loads(pickle.dumps(spec)) == spec and len(pickle.dumps(spec)) < 500
    with pytest.warns(UserWarning, match=r"4 of 6 images resized to 16×16"):  # the worker's load says it too
        loaded = spec.load("cpu")
    assert loaded.classes == ("cat", "dog") and loaded.size == 16 and spec.load("cpu") is loaded
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        D.image_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        D.DataSpec.image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['sise'\]"):
        D.DataSpec.image_folder(root, sise=16)


def test_from_dataset_takes_tensors_arrays_and_pil_images():
    from PIL import Image

    rng = np.random.default_rng(3)
    tensors = [(torch.rand(1, 8, 8), k % 2) for k in range(10)]  # ToTensor: float (C, H, W) in [0, 1]
    assert D.Data.from_dataset(tensors, device="cpu").channels == 1
    arrays = [(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.int64(k % 3)) for k in range(10)]
    assert D.Data.from_dataset(arrays, device="cpu").n_classes == 3
    palette = [(Image.new("P", (8, 8)), torch.tensor(k % 2)) for k in range(10)]
    assert D.Data.from_dataset(palette, device="cpu").channels == 3
    with pytest.raises(ValueError, match=r"looks \(H, W, C\)"):
        D.Data.from_dataset([(torch.rand(8, 8, 3), 0)] * 10)
    with pytest.raises(TypeError, match="labels must be class indices"):
        D.Data.from_dataset([(torch.rand(1, 4, 4), "cat")] * 10)
    with pytest.raises(TypeError, match=r"must be an \(image, label\) pair"):
        D.Data.from_dataset([torch.rand(1, 4, 4)] * 10)
    with pytest.raises(ValueError, match=r"mixes images with \[1, 3\] channels"):
        D.Data.from_dataset([(torch.rand(1, 4, 4), 0), (torch.rand(3, 4, 4), 1)] * 5)


# --- review of issue 11: what still passed silently ----------------------------------------------------------------


def test_nchw_images_given_as_nhwc_are_refused():
    "layout='NHWC' on images already (N, C, H, W) would give 16-channel 3×16 images: refused, naming the fix."
    x, y = np.zeros((20, 3, 16, 16), dtype=np.uint8), np.zeros(20, dtype=int)
    with pytest.raises(ValueError, match=r"\(20, 3, 16, 16\), which looks \(N, C, H, W\) already; drop layout='NHWC'"):
        D.Data.from_tensors(x, y, layout="NHWC")
    assert D.Data.from_tensors(x.transpose(0, 2, 3, 1), y, layout="NHWC", device="cpu").channels == 3
    assert (
        D.Data.from_tensors(np.zeros((20, 4, 4, 3), dtype=np.uint8), y, layout="NHWC", device="cpu").size == 4
    )  # tiny: NHWC


def test_numpy_numbers_are_counts_and_fractions():
    x, y = np.zeros((40, 1, 8, 8), dtype=np.uint8), np.arange(40) % 4
    data = D.Data.from_tensors(
        x, y, val_size=np.int64(6), test_size=np.float64(0.25), classes=np.int64(5), device="cpu"
    )
    assert (len(data.y_val), len(data.y_test), data.n_classes) == (6, 10, 5)
    assert len(D.Data.from_tensors(x, y, val_size=np.float32(0.5), device="cpu").y_val) == 20
    t = torch.from_numpy(x)
    assert (
        D.Data(t, torch.from_numpy(y), t, torch.from_numpy(y), t, torch.from_numpy(y), classes=np.int32(4)).classes[-1]
        == "class 3"
    )
    for bad in (True, np.bool_(True), "0.1", np.int64(40)):
        with pytest.raises(ValueError, match="val_size must be a fraction in"):
            D.Data.from_tensors(x, y, val_size=bad)


def test_one_label_check_for_data_and_for_what_it_reads():
    "Data, from_tensors and from_dataset report the same label mistake with the same words (images.check_labels)."
    from nash_lit import images

    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.tensor([0, 1, -1, 2])
    messages = []
    for call in (
        lambda: D.Data(x, y, x, y, x, y),
        lambda: images.as_labels(y, 4, "Data.y_train"),
        lambda: images.check_labels(y, 4, "Data.y_train"),
    ):
        with pytest.raises(ValueError) as e:
            call()
        messages.append(str(e.value))
    assert len(set(messages)) == 1 and "holds the label -1" in messages[0]
    with pytest.raises(ValueError, match=r"Data\.from_dataset: train holds the label -1"):
        D.Data.from_dataset([(torch.zeros(1, 4, 4), -1)] * 4)
    assert not hasattr(D, "_check_labels")


def test_from_dataset_refuses_test_classes_that_differ():
    class Folder(list):
        def __init__(self, items, classes):
            super().__init__(items)
            self.classes = classes

    items = [(torch.rand(1, 4, 4), k % 2) for k in range(10)]
    with pytest.raises(
        ValueError, match=r"test set's classes \['dog', 'cat'\] differ from the training set's \['cat', 'dog'\]"
    ):
        D.Data.from_dataset(Folder(items, ["cat", "dog"]), Folder(items, ["dog", "cat"]))
    data = D.Data.from_dataset(Folder(items, ["cat", "dog"]), Folder(items, ["cat", "dog"]), val_size=2, device="cpu")
    assert data.classes == ("cat", "dog") and len(data.y_test) == 10
    assert (
        len(D.Data.from_dataset(Folder(items, ["cat", "dog"]), items, val_size=2, device="cpu").y_test) == 10
    )  # a list: no classes


def test_image_folder_test_root_with_other_classes(tmp_path):
    _image_folder(tmp_path / "train")
    _image_folder(tmp_path / "test")
    (tmp_path / "test" / "dog").rename(tmp_path / "test" / "wolf")
    with pytest.raises(ValueError, match=r"test set's classes \['cat', 'wolf'\] differ"):
        D.image_folder(tmp_path / "train", size=8, test_root=tmp_path / "test")


def test_from_dataset_with_a_normalize_transform_says_so():
    import torchvision.transforms as TF

    normalise = TF.Compose([TF.ToTensor(), TF.Normalize([0.5], [0.25])])
    rng = np.random.default_rng(0)
    items = [(normalise(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)), k % 2) for k in range(10)]
    with pytest.raises(
        ValueError, match=r"train\[0\]: float images must lie in \[0, 1\].*look normalised.*drop Normalize"
    ):
        D.Data.from_dataset(items)
    with pytest.raises(ValueError, match="255 for bytes stored as floats"):
        D.Data.from_dataset([(torch.full((1, 4, 4), 200.0), 0)] * 4)


def _png16(path, pixels):
    "A 16-bit greyscale PNG written by PIL (mode I;16)."
    from PIL import Image

    img = Image.fromarray(pixels.astype(np.uint16))
    assert img.mode == "I;16"
    img.save(path)
    return path


def test_16_bit_images_are_refused_not_saturated(tmp_path):
    "PIL's convert('RGB') clips 16-bit values to 255 (near white): such images are refused, naming the mode and the fix."
    from PIL import Image

    deep = _png16(tmp_path / "deep.png", np.arange(64).reshape(8, 8) * 1000)
    with Image.open(deep) as img:
        assert (
            img.mode == "I;16" and (np.array(img.convert("RGB")) == 255).mean() > 0.95
        )  # what a silent conversion gives
        with pytest.raises(
            ValueError, match=r"values in \[0, 63000\].*PIL image of mode 'I;16'.*scale it to 0\.\.255 first"
        ):
            D.Data.from_dataset([(img, 0)] * 4)
    shallow = _png16(
        tmp_path / "shallow.png", np.arange(64).reshape(8, 8)
    )  # 16-bit file, byte values: read as they are
    with Image.open(shallow) as img:
        data = D.Data.from_dataset([(img, 0), (img, 1)] * 5, device="cpu")
    assert data.channels == 1 and torch.equal(data.x_test[0, 0], torch.arange(64, dtype=torch.uint8).reshape(8, 8))
    for name in ("cat", "dog"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for k in range(3):
            _png16(tmp_path / "folder" / name / f"{k}.png", np.full((8, 8), 40000))
    with pytest.raises(ValueError, match="mode 'I;16'"):  # torchvision's own loader would give white RGB images
        D.image_folder(tmp_path / "folder")
    with Image.open(deep) as img:
        for mode in ("I", "F"):
            with pytest.raises(ValueError, match=f"mode '{mode}'"):
                D.Data.from_dataset([(img.convert(mode), 0)] * 4)


def test_cifar_reading_lives_in_images_and_is_importable_from_data():
    "CIFAR-10's files are read in nash_lit.images; nash_lit.data exports the same objects, DataSpec stays."
    from nash_lit import images

    for name in ("ARCHIVE", "FOLDER", "data_root", "read_cifar10"):
        assert getattr(D, name) is getattr(images, name) and name in D.__all__
    from nash_lit.data import DataSpec, read_cifar10

    assert DataSpec.__module__ == "nash_lit.data" and read_cifar10 is images.read_cifar10
