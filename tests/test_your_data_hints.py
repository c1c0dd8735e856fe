"""Issue 23, points 3-5: what a new user with their own images tripped on. Non-square images are refused with the fix
(and work with size=); an image folder of mixed sizes or with transparency loads only with size= and says, once, what
it did; every hint names the actual problem; labels that are not 0..K-1 are mapped, with the original labels as class
names; validation and test images are held out class by class."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from nash_lit import Data, image_folder, seed_arch

RNG = np.random.default_rng(0)


def test_non_square_images_are_refused_with_the_fix_and_work_resized():
    x, y = RNG.random((40, 24, 40), dtype=np.float32), RNG.integers(0, 2, 40)
    with pytest.raises(ValueError, match=r"24×40 \(H×W\), not square.*size=S"):
        Data.from_tensors(x, y)
    data = Data.from_tensors(x, y, size=24)
    assert data.size == 24 and seed_arch(in_channels=data.channels, size=data.size, classes=2).to_json()


def _folder(root, sizes_and_modes):
    "One class folder per entry of `sizes_and_modes`: a list of ((h, w), mode) per image."
    for k, images in enumerate(sizes_and_modes):
        (root / f"class{k}").mkdir(parents=True)
        for i, ((h, w), mode) in enumerate(images):
            Image.fromarray(np.full((h, w, 4), 50 * (k + 1), np.uint8)).convert(mode).save(root / f"class{k}/{i}.png")


def test_an_image_folder_of_mixed_sizes_needs_size_and_says_what_it_did(tmp_path):
    _folder(tmp_path, [[((8, 8), "RGB"), ((8, 12), "RGBA"), ((16, 16), "RGB")], [((8, 8), "RGB")] * 3])
    with pytest.raises(ValueError, match=r"images of different sizes.*pass size="):
        image_folder(tmp_path)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        data = image_folder(tmp_path, size=8, val_size=1, test_size=1, device="cpu")
    messages = [str(w.message) for w in said if "resized" in str(w.message)]
    assert len(messages) == 1, messages  # once, for the whole folder
    assert {w.filename for w in said if "resized" in str(w.message)} == {__file__}  # names this line, not nash_lit's
    assert "2 of 6 images resized to 8×8, 1 of them not square" in messages[0], messages[0]
    assert "1 of 6 images had an alpha channel" in messages[0], messages[0]
    assert data.size == 8 and data.channels == 3


def test_an_image_folder_of_one_size_loads_without_a_word(tmp_path):
    _folder(tmp_path, [[((8, 8), "RGB")] * 3, [((8, 8), "RGB")] * 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image_folder(tmp_path, val_size=1, test_size=1, device="cpu")


@pytest.mark.parametrize(
    "make, says, not_says",
    [
        (lambda: Data.from_tensors(RNG.random((20, 8, 8)) * 16, RNG.integers(0, 2, 20)), "16 for scikit-learn", None),
        (
            lambda: Data.from_tensors(RNG.random((20, 8, 8)), RNG.integers(0, 2, 20).astype(np.float64)),
            "y.astype(np.int64)",
            "y.long()",
        ),
        (
            lambda: Data(
                *(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)) * 2,
                torch.zeros(4, 1, 8, 8, dtype=torch.uint8),
                torch.zeros(4, dtype=torch.long),
            ),
            "x_test has 1 channel(s), x_train 3",
            "size=",
        ),
        (lambda: Data.from_tensors(np.zeros((0, 8, 8)), np.zeros(0, np.int64)), "the dataset is empty", "left"),
    ],
    ids=["floats 0..16", "numpy float labels", "1 channel against 3", "empty"],
)
def test_hints_name_the_actual_problem(make, says, not_says):
    with pytest.raises((ValueError, TypeError)) as e:
        make()
    assert says in str(e.value), str(e.value)
    assert not_says is None or not_says not in str(e.value), str(e.value)


def test_labels_that_are_not_0_to_k_are_mapped_with_a_warning():
    x, y = RNG.random((100, 8, 8), dtype=np.float32), RNG.integers(1, 11, 100)  # 1..10
    with pytest.warns(UserWarning, match=r"the labels are 1, 2, .* not 0..9; they are mapped") as said:
        data = Data.from_tensors(x, y)
    assert [w.filename for w in said] == [__file__]  # the warning names the user's call
    assert data.n_classes == 10 and data.classes == tuple(str(k) for k in range(1, 11))
    assert int(data.y_train.min()) == 0 and int(data.y_train.max()) <= 9
    gaps = np.array([0, 5, 7] * 10)
    with pytest.warns(UserWarning, match=r"the labels are 0, 5, 7, not 0..2"):
        assert Data.from_tensors(RNG.random((30, 8, 8)), gaps).classes == ("0", "5", "7")
    with pytest.warns(UserWarning, match=r"not 0..2") as said:  # through image_folder's Data.from_dataset too
        Data.from_dataset([(torch.zeros(3, 4, 4, dtype=torch.uint8), k) for k in (0, 5, 7) * 4])
    assert [w.filename for w in said] == [__file__]


def test_validation_and_test_images_are_held_out_class_by_class():
    y = np.array([0] * 150 + [1] * 75 + [2] * 25)
    x = RNG.random((250, 8, 8), dtype=np.float32)
    for seed in range(5):
        data = Data.from_tensors(x, y, val_size=0.1, test_size=0.1, seed=seed, device="cpu")
        for held in (data.y_val, data.y_test):
            share = torch.bincount(held, minlength=3).double() - 0.1 * torch.tensor([150.0, 75.0, 25.0])
            assert share.abs().max() <= 1, (seed, torch.bincount(held).tolist())


def test_a_search_that_fails_before_its_first_record_leaves_no_folder(tmp_path, monkeypatch):
    "Issue 23, point 1: a temporary run folder is removed when nothing was logged in it; kept (and named) otherwise."
    import tempfile

    from nash_lit import NashConfig, TrainConfig, nash, synthetic
    from nash_lit import driver

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the search's temporary folders go here

    def dies(task):
        raise KeyboardInterrupt  # Ctrl-C while the seed trains: before anything is logged

    monkeypatch.setattr(driver, "evaluate_child", dies)
    config = NashConfig(n_steps=1, n_child=1, train=TrainConfig(batch_size=32, progress=False))
    with pytest.raises(KeyboardInterrupt):
        nash(seed_arch((4, 8, 8)), synthetic(32, 16, 16), config, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_pareto_result_prints_in_a_few_lines():
    "Issue 23, point 6: print() of a Pareto-NASH result says what was found, its cost and where the run lives."
    from _helpers import small_pareto_config, tiny_p0

    from nash_lit import pareto_nash, synthetic

    result = pareto_nash(tiny_p0(), synthetic(64, 32, 16), small_pareto_config(n_gen=1, n_pc=3), progress=False)
    text = str(result)
    assert len(text.splitlines()) <= 3 and len(text) < 600, text
    for said in ("networks on the front", "lowest validation error", "hypervolume", "cost:", "run_dir="):
        assert said in text, text
