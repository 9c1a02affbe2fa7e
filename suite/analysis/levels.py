"""Per-level metrics as tables: one row per method (label order), one column per pruning level (p00 ...,
then `natural`), cells mean ± std over seeds. What each tabulated metric is lives here, in two groups:
ACCURACY (the per-dataset section, accuracy.py) and TRUST (the uncertainty section, trust.py); quote.py
offers both as `level METRIC DATASET`."""
from __future__ import annotations

import pandas as pd

from .load import NAT, by_level, level_key, ordered_labels
from .table import DAGGER, Table, cell, collapsed_cells, level_name, summarize

# metric -> (title, what it is, higher is better; None = no "best")
ACCURACY = {
    "test_acc": ("Test accuracy", "one deterministic forward pass (posterior mean for Bayesian methods)", True),
    "oneshot_acc": ("Test accuracy before fine-tuning", "one-shot pruned, before the fine-tune protocol retrained it", True),
    "test_acc_mc": ("Ensemble test accuracy", "Monte Carlo ensemble of sampled networks (methods that sample)", True),
    "test_nll": ("Test NLL", "negative log-likelihood, nats per example", False),
    "test_nll_mc": ("Ensemble test NLL", "Monte Carlo ensemble, nats per example", False),
    "test_ece": ("Test ECE", "expected calibration error, 15 bins", False),
    "test_ece_mc": ("Ensemble test ECE", "Monte Carlo ensemble, expected calibration error, 15 bins", False),
    "sparsity": ("Measured sparsity",
                 ("fraction of zeros among the weights one forward pass multiplies with, on a weight sample for "
                  "stochastic methods (L0's sampled gates close more weights than its deterministic net, "
                  "whose count the Compression section uses)"), None),
}
# suite/evaluate/ood.py's metrics; OOD = the other dataset's test images
TRUST = {
    "ood_auroc_entropy": ("OOD detection AUROC, predictive entropy",
                          "AUROC of telling the other dataset's test images from this one's by predictive entropy", True),
    "ood_auroc_mi_mc": ("OOD detection AUROC, mutual information",
                        "AUROC by the Monte Carlo ensemble's mutual information (epistemic part; methods that sample)", True),
    "shift_acc_mean": ("Accuracy under rotation", "test accuracy on rotated images, mean over 0..180 degrees", True),
    "shift_ece_mean": ("ECE under rotation", "expected calibration error on rotated images, mean over the angles", False),
}
METRICS = {**ACCURACY, **TRUST}


def level_table(df: pd.DataFrame, metric: str, dataset: str) -> Table:
    """Rows = labels in order, columns = levels (p00 ... then `natural`, whose cells also give the
    measured sparsity the method chose); best per column in bold by the metric's direction."""
    d = df[df.dataset == dataset]
    long = by_level(d, metric)
    s = summarize(long, metric, ["label", "level"])
    if s.empty:
        return Table(pd.DataFrame())
    # a natural-level cell also says which sparsity the method chose (not needed in the sparsity table itself)
    nat_sp = long[long.level == NAT].groupby("label")["sparsity"].mean() if metric != "sparsity" else {}
    dead = collapsed_cells(d, long, ["label", "level"])
    s["cell"] = [cell(m, sd, n, note=" ".join(filter(None, (f"@ {nat_sp[lab]:.1%} sparse" if lv == NAT and lab in nat_sp
                                                            else "", DAGGER if dead[(lab, lv)] else ""))))
                 for m, sd, n, lab, lv in zip(s["mean"], s["std"], s["n"], s.label, s.level)]
    order = [lab for lab in ordered_labels(d) if lab in set(s.label)]
    cols = sorted(s.level.unique(), key=level_key)
    means = s.pivot(index="label", columns="level", values="mean").loc[order, cols]
    cells = s.pivot(index="label", columns="level", values="cell").loc[order, cols].fillna("-")
    means.columns = cells.columns = [level_name(c) for c in cols]
    return Table(cells, means, METRICS[metric][2])
