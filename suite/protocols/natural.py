"""natural: oneshot plus the level `nat` at the mask the method chooses itself (Sparse VD: log alpha
<= 3, Molchanov et al. 2017; L0: the test-time gate > 0, Louizos et al. 2018); only for methods
with has_natural."""
from __future__ import annotations

from torch import Tensor

from ..registry import METHODS, PROTOCOLS
from . import register
from .base import Protocol


@register
class Natural(Protocol):
    name, order = "natural", 20.0

    @classmethod
    def check(cls, cfg, fail) -> None:
        if not cfg.method_cls.has_natural:
            natural = [m for m, k in METHODS.items() if k.has_natural]
            others = [p for p in PROTOCOLS if p != cls.name]
            fail("protocol", cls.name, f"{' | '.join(others)} for method={cfg.method} (natural needs a method that "
                                       f"chooses its own sparsity: {' | '.join(natural) or 'none registered'})")

    @classmethod
    def levels(cls, cfg) -> list[float | str]:
        return [*cfg.sparsities, "nat"]

    def mask(self, level: float | str) -> tuple[Tensor, float]:
        if level != "nat":
            return super().mask(level)
        # the method's own mask, restricted to the prunable entries (no score threshold)
        return self.model.natural_keep().cpu() & self.allowed | ~self.allowed, float("nan")

