"Data specs (nash_lit.data): picklable, small, cached once per process, and checked before anything loads."
import pickle

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
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['size_'\]"): D.DataSpec.synthetic(size_=3)
    with pytest.raises(ValueError, match="device is chosen by load"): D.DataSpec.synthetic(device="cpu")
    with pytest.raises(TypeError, match="expected a Data or a DataSpec"): D.as_spec("cifar10")
    with pytest.raises(TypeError, match="takes a Data"): D.DataSpec.wrap([1, 2])
    with pytest.raises(ValueError, match="unknown data loader 'imagenet'"): D.DataSpec("imagenet").load("cpu")


def test_cifar10_spec_reads_the_data_root_in_the_loading_process(tmp_path):
    "A CIFAR-10 spec made where there is no data pickles and compares; loading it is what needs the files."
    spec = D.DataSpec.cifar10(root=str(tmp_path), download=False)
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"): spec.load("cpu")


def test_train_plus_val():
    data = D.synthetic(40, 10, 10)
    both = D.train_plus_val(data)
    assert len(both.y_train) == 50 and len(both.y_val) == 0
    assert torch.equal(both.mean, data.mean) and torch.equal(both.x_test, data.x_test)
    assert D.train_plus_val(both) is both
