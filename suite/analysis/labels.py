"""One order and one colour per method label, the same in every report, whatever its run tags say.

Runs carry `label_order` and `color` tags written at training time, and those drifted (Dropout was
orange in one experiment and olive in another). The analysis therefore places and colours the
built-in labels (the suite's own methods under its own protocols) from BUILT_IN here, and reads a
run's tags only for labels it does not know: a plug-in method or protocol keeps the colour and order
its tags give. Orders are on the tags' scale, so plug-in labels sort among the built-in ones.
"""
from __future__ import annotations

import math
import re

# label -> (order, colour), in the order the report lists them
BUILT_IN = {
    "SGD": (0.0, "#1f77b4"),
    "SGD + fine-tune": (0.5, "#17becf"),
    "SGD + gradual": (0.6, "#393b79"),
    "SGD + gradual in training": (0.65, "#6b6ecf"),
    "SGD + iterative": (0.7, "#637939"),
    "BBB": (10.0, "#d62728"),
    "Sparse VD": (20.0, "#8c564b"),
    "L0": (30.0, "#e377c2"),
    "BC-GNJ": (40.0, "#bcbd22"),
    "BC-GHS": (41.0, "#9edae5"),
}
# Dropout p sorts by p between SGD and SGD + fine-tune (order p / 2) and takes the colour of the nearest of
# the study's rates, so a searched rate (Dropout 0.5163) looks like the rate it replaces (Dropout 0.5)
DROPOUT = re.compile(r"^Dropout (?P<p>\d*\.?\d+)$")
DROPOUT_COLORS = {0.5: "#ff7f0e", 0.75: "#2ca02c", 0.9: "#9467bd"}


def style(label: str, order_tag: str | None, color_tag: str | None) -> tuple[float, str | None]:
    """(order, colour) of a label: BUILT_IN or the Dropout rule, else the run's tags (NaN / None when absent)."""
    if label in BUILT_IN:
        return BUILT_IN[label]
    if m := DROPOUT.match(str(label)):
        p = float(m["p"])
        return p / 2, DROPOUT_COLORS[min(DROPOUT_COLORS, key=lambda q: abs(q - p))]
    try:
        order = float(order_tag)
    except (TypeError, ValueError):
        order = math.nan
    return order, color_tag
