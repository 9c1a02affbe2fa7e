"""The quantised compacted network as a file: exactly the storage bits.py counts, written out, so the
file's size proves `stored_bytes_pNN` (suite.export writes it as model_pNN.q).

Every field is an unsigned big-endian integer, most significant bit first, packed without gaps:

    file header, whole bytes (not counted by bits.stored_bits: it says what the counted headers do
    not, how many sparse entries each layer has):
        "BPBQ", version 1 (8 bits), layers L (8 bits), inputs n (16 bits), L x entries (32 bits each,
        0 for a dense layer)                                            8 + 4 L bytes
    body, exactly bits.stored_bits(...) bits:
        live-input mask: n bits, 1 = the first layer reads that pixel (in order)
        per layer:
            header (HEADER_BITS = 64): rows 16, cols 16, b 8, F 8 (255: float32, no fraction bits),
                k 8 (0 for dense), format 8 (0 dense, 1 sparse)
            weights, dense: rows x cols values of b bits, row-major;
                     sparse: entries of k + b bits, k bits holding d - 1 for the gap d in 1..2^k from
                     the previous entry's place (the first from -1), then b value bits; a gap over 2^k
                     is preceded by filler entries of gap 2^k and value 0 (ceil(d / 2^k) entries per
                     nonzero: bits.relative_index_entries)
            biases: rows float32 (IEEE 754 bit patterns)
    zero bits up to the next whole byte.

So the file holds 8 + 4 L + ceil(stored_bits / 8) bytes. A value is sign and magnitude, as bits.py
counts its width b = 1 + bit_length(max |code|): the sign bit (1 = negative), then the b - 1 bits of
|code|, the weight being code x 2^-F (bits.fixed_point); a float32 layer (F = 255, b = 32, the
validation rule found no precision for it) stores its weights' IEEE bit patterns. A filler's value 0
falls on a place that holds no weight. decode() reads a file with numpy alone.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import bits

MAGIC, VERSION = b"BPBQ", 1
FLOAT32 = 255  # the F field of a layer stored as float32


def file_header_bytes(n_layers: int) -> int:
    """Bytes before the body: magic, version, layer count, input count, each layer's entry count."""
    return 8 + 4 * n_layers


def _fields(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned integers `values` as `width` bits each, most significant first: uint8 [len * width]."""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & 1).astype(np.uint8).ravel()


def _values(w: Tensor, frac_bits: int | None, b: int) -> np.ndarray:
    """w's entries as stored, b bits each: sign and magnitude of the code, or float32's bit pattern."""
    if frac_bits is None:
        return w.float().contiguous().view(torch.int32).numpy().view(np.uint32).astype(np.uint64)
    code = bits.fixed_point(w, frac_bits).numpy().astype(np.int64)
    return ((code < 0).astype(np.uint64) << np.uint64(b - 1)) | np.abs(code).astype(np.uint64)


def _entries(nonzero: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The relative-index entries (gap - 1, value) of the nonzeros at row-major places `nonzero`:
    a gap d takes ceil(d / 2^k) entries, all but the last fillers of gap 2^k and value 0."""
    step = 2 ** k
    gaps = np.diff(nonzero, prepend=-1)
    count = (gaps + step - 1) // step
    last = np.cumsum(count) - 1
    gap, value = np.full(int(count.sum()), step, np.int64), np.zeros(int(count.sum()), np.uint64)
    gap[last], value[last] = gaps - (count - 1) * step, values
    return (gap - 1).astype(np.uint64), value


def _check(name: str, v: int, width: int) -> None:
    if not 0 <= v < 2 ** width:
        raise ValueError(f"{name} {v} does not fit the format's {width} bits: a net this large cannot be stored in it")


def encode(layers: bits.Layers, frac_bits: list[int | None], live: Tensor, n_inputs: int) -> bytes:
    """The file of `layers` (the compacted net as bits.stored_layers gives it, float weights) quantised at
    frac_bits per layer (bits.quantised), live the indices of the live inputs among n_inputs. Its body
    is bits.stored_bits of the quantised layers, checked here."""
    q, value_bits = bits.quantised(layers, frac_bits)
    mask = np.zeros(n_inputs, np.uint64)
    mask[live.cpu().numpy()] = 1
    body, counts = [_fields(mask, 1)], []
    for (w, bias), (wq, _), f, b in zip(layers, q, frac_bits, value_bits):
        rows, cols = w.shape
        _, k = bits.cheapest(wq, b)
        head = [(rows, 16), (cols, 16), (b, 8), (FLOAT32 if f is None else f, 8), (k, 8), (int(k > 0), 8)]
        for (v, width), name in zip(head, ("rows", "cols", "b", "F", "k", "format")):
            _check(name, v, width)
        body.append(np.concatenate([_fields(np.array([v]), width) for v, width in head]))
        values = _values(w.detach().cpu().flatten(), f, b)
        if k:
            nonzero = (wq != 0).flatten().nonzero().squeeze(1).cpu().numpy()
            gap, value = _entries(nonzero, values[nonzero], k)
            body.append(_fields((gap << np.uint64(b)) | value, k + b))
            counts.append(len(gap))
        else:
            body.append(_fields(values, b))
            counts.append(0)
        patterns = bias.detach().cpu().float().contiguous().view(torch.int32).numpy().view(np.uint32)
        body.append(_fields(patterns, 32))
    body_bits = np.concatenate(body)
    want = bits.stored_bits(q, value_bits, n_inputs)[0]
    if len(body_bits) != want:
        raise AssertionError(f"the packed body holds {len(body_bits)} bits, bits.stored_bits counts {want}")
    _check("layers", len(layers), 8)
    _check("inputs", n_inputs, 16)
    for c in counts:
        _check("entries", c, 32)
    front = MAGIC + bytes([VERSION, len(layers)]) + n_inputs.to_bytes(2, "big") + b"".join(c.to_bytes(4, "big") for c in counts)
    return front + np.packbits(body_bits).tobytes()


def decode(raw: bytes):
    """A model_pNN.q file's bytes -> (mask [n] bool: the live inputs, [(weight [rows, cols], bias [rows])]
    float32 per layer, the first reading x[:, mask]). Numpy only: copy it to read a file without this project."""
    assert raw[:5] == b"BPBQ\x01", "not a version 1 quantised model file"
    n_layers, n_in = raw[5], int.from_bytes(raw[6:8], "big")
    entries = np.frombuffer(raw, ">u4", n_layers, 8)
    stream = np.unpackbits(np.frombuffer(raw, np.uint8, offset=8 + 4 * n_layers))
    pos = 0

    def take(width, n=1):  # n unsigned fields of `width` bits, most significant bit first
        nonlocal pos
        fields = stream[pos:pos + width * n].reshape(n, width).astype(np.int64) @ (1 << np.arange(width - 1, -1, -1))
        pos += width * n
        return fields

    mask, layers = take(1, n_in).astype(bool), []
    for i in range(n_layers):
        rows, cols, b, f, k, sparse = [*take(16, 2).tolist(), *take(8, 4).tolist()]
        if sparse:  # entries: k bits gap - 1, b bits value; fillers write a 0 where no weight is
            e = take(k + b, int(entries[i]))
            where, values = np.cumsum((e >> b) + 1) - 1, e & ((1 << b) - 1)
        else:
            where, values = np.arange(rows * cols), take(b, rows * cols)
        if f == 255:  # float32 as it is
            w = values.astype(np.uint32).view(np.float32)
        else:  # sign and magnitude, times 2^-F
            magnitude = values & ((1 << (b - 1)) - 1)
            w = (np.where(values >> (b - 1), -magnitude, magnitude) * 2.0 ** -f).astype(np.float32)
        weight = np.zeros(rows * cols, np.float32)
        weight[where] = w
        layers.append((weight.reshape(rows, cols), take(32, rows).astype(np.uint32).view(np.float32)))
    return mask, layers
