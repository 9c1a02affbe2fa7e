"""The speed targets, as ratios of median step times measured side by side (docs/performance.md)."""
from __future__ import annotations

# (name, numerator, denominator, op, target); "{s}" is the BBB samples per step
TARGETS = (("ours BBB / ours SGD", "ours BBB ({s} sample)", "ours SGD", "<=", 2.0),
           ("ours Sparse VD / ours SGD", "ours Sparse VD", "ours SGD", "<=", 2.5),
           ("BLiTZ BBB / ours BBB", "BLiTZ BBB ({s} sample)", "ours BBB ({s} sample)", ">=", 4.0),
           ("bayesian-torch BBB / ours BBB", "bayesian-torch BBB ({s} sample)", "ours BBB ({s} sample)", ">=", 2.5))


def speed_targets(steps: dict[str, float], s: int) -> list[dict[str, object]]:
    """Each target whose two contenders were measured: {name, value, op, target, met}."""
    out = []
    for name, num, den, op, target in TARGETS:
        num, den = num.format(s=s), den.format(s=s)
        if num in steps and den in steps:
            v = steps[num] / steps[den]
            out.append({"name": name, "value": v, "op": op, "target": target, "met": v <= target if op == "<=" else v >= target})
    return out
