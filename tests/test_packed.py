"""The quantised net's file (suite/evaluate/packed.py): its size against bits counted by hand, its bits
against hand-written streams (sign and magnitude, relative indices, filler entries), and the numpy
reader giving back exactly what bits.quantised makes; docs/bits.md shows the reader as it is."""
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.evaluate import bits, packed


def body(raw: bytes, n_layers: int) -> str:
    """The file's body as a string of 0s and 1s (after the 8 + 4 L byte file header)."""
    return "".join(f"{x:08b}" for x in raw[packed.file_header_bytes(n_layers):])


def f32(x: float) -> str:
    return f"{np.array(x, np.float32).view(np.uint32):032b}"


def exact(decoded, q):
    return all(torch.equal(torch.from_numpy(w), wq) and torch.equal(torch.from_numpy(b), bq)
               for (w, b), (wq, bq) in zip(decoded, q))


def test_a_hand_counted_two_layer_net_its_size_and_its_bits():
    """6 inputs, live 1 and 4 (mask 010010). F = 2 (step 0.25) in both layers.
    Layer 1, 2x2, codes [[2, 0], [0, -3]]: b = 1 + bit_length(3) = 3; dense 4 x 3 = 12 bits; nonzeros at
    places 0, 3 (gaps 1, 3): k=1 1 + 2 = 3 entries x 4 = 12, k=2 2 x 5 = 10, k=3 2 x 6 = 12 -> sparse k2,
    10 bits: gap-1 00, +2 = 010; gap-1 10, -3 = 111.
    Layer 2, 3x2, codes [[4, -4], [1, 0], [0, 2]]: b = 1 + bit_length(4) = 4; dense 24; gaps 1, 1, 1, 3:
    k=1 5 x 5 = 25, k=2 4 x 6 = 24 (not cheaper), k=3 4 x 7 = 28 -> dense: 0100 1100 0001 0000 0000 0010.
    Bits: 6 + (64 + 10 + 2 x 32) + (64 + 24 + 3 x 32) = 328 = 41 bytes; file 8 + 2 x 4 + 41 = 57 bytes."""
    w1, b1 = torch.tensor([[0.5, 0.0], [0.0, -0.75]]), torch.tensor([0.1, -0.2])
    w2, b2 = torch.tensor([[1.0, -1.0], [0.25, 0.0], [0.0, 0.5]]), torch.tensor([0.0, 0.0, 1.0])
    layers = [(w1, b1), (w2, b2)]
    raw = packed.encode(layers, [2, 2], torch.tensor([1, 4]), 6)
    assert len(raw) == 57 and bits.stored_bits(*bits.quantised(layers, [2, 2]), 6)[0] == 328
    assert raw[:8] == b"BPBQ\x01\x02\x00\x06" and raw[8:16] == bytes([0, 0, 0, 2, 0, 0, 0, 0])  # 2 entries; dense
    head1 = f"{2:016b}{2:016b}{3:08b}{2:08b}{2:08b}{1:08b}"  # rows, cols, b, F, k, sparse
    head2 = f"{3:016b}{2:016b}{4:08b}{2:08b}{0:08b}{0:08b}"
    want = ("010010" + head1 + "00" + "010" + "10" + "111" + f32(0.1) + f32(-0.2)
            + head2 + "0100" + "1100" + "0001" + "0000" + "0000" + "0010" + f32(0.0) + f32(0.0) + f32(1.0))
    assert len(want) == 328 and body(raw, 2) == want  # 328 bits: no padding
    mask, decoded = packed.decode(raw)
    assert mask.tolist() == [False, True, False, False, True, False] and exact(decoded, [(w1, b1), (w2, b2)])


def test_a_gap_over_two_to_the_k_takes_filler_entries():
    """A 1x41 row, codes +1 at places 0..7 and -1 at 40 (F = 0, b = 2): gaps eight 1s and 33. Entries:
    k=2 8 + 9 = 17 x 4 = 68, k=3 8 + ceil(33/8) = 13 x 5 = 65, k=4 8 + 3 = 11 x 6 = 66, dense 82 ->
    sparse k3: the gap 33 is four fillers of gap 8 (index 111, value 00) and an entry of gap 1 (000, -1 = 11)."""
    w = torch.zeros(1, 41)
    w[0, :8], w[0, 40] = 1.0, -1.0
    layers = [(w, torch.zeros(1))]
    raw = packed.encode(layers, [0], torch.arange(41), 41)
    assert bits.weight_bits(w, 2) == (65, "sparse k3")
    assert int.from_bytes(raw[8:12], "big") == 13
    weights = body(raw, 1)[41 + 64:41 + 64 + 65]
    assert weights == "00001" * 8 + "11100" * 4 + "00011"
    assert len(raw) == 12 + -(-(41 + 64 + 65 + 32) // 8)
    _, [(got, _)] = packed.decode(raw)
    assert np.array_equal(got, w.numpy())


@pytest.mark.parametrize("frac", [[0, 3, 23], [None, 7, 2], [23, None, None], [12, 12, 12]])
def test_the_reader_gives_back_exactly_the_quantised_net(frac):
    """Random compacted layers (some with most weights zero, one of them all zero) at fraction bits from
    0 to 23 and float32 (None): the file's size is its header plus stored_bits rounded up to a byte, and
    the numpy reader returns bits.quantised's weights and the biases bit for bit."""
    g = torch.Generator().manual_seed(sum(f or 32 for f in frac))
    shapes = [(30, 50), (20, 30), (10, 20)]
    layers = [(torch.randn(s, generator=g) * 3 * (torch.rand(s, generator=g) < p), torch.randn(s[0], generator=g))
              for s, p in zip(shapes, (0.05, 0.5, 1.0))]
    layers[1][0][5:] = 0.0  # rows of zeros: long gaps
    live = torch.sort(torch.randperm(784, generator=g)[:50]).values
    raw = packed.encode(layers, frac, live, 784)
    q, value_bits = bits.quantised(layers, frac)
    n_bits = bits.stored_bits(q, value_bits, 784)[0]
    assert len(raw) == packed.file_header_bytes(3) + -(-n_bits // 8)
    mask, decoded = packed.decode(raw)
    assert mask.nonzero()[0].tolist() == live.tolist() and exact(decoded, q)


def test_a_net_too_wide_for_the_header_is_refused():
    with pytest.raises(ValueError, match="cols 70000 does not fit"):
        packed.encode([(torch.zeros(1, 70000), torch.zeros(1))], [0], torch.arange(3), 784)


def test_the_docs_show_the_reader_as_it_is():
    doc = (Path(__file__).parents[1] / "docs" / "bits.md").read_text()
    block = re.search(r"```python\nimport numpy as np\n\n\n(def decode.*?)```", doc, re.S).group(1)
    assert block == inspect.getsource(packed.decode)
