"""Evaluation of a model at its pruning levels, apart from training: it runs at the end of a trial and
on stored weights alike.

    metrics.py  accuracy / NLL / ECE of predicted probabilities; weight and SNR histogram bins
    ood.py      out-of-distribution detection (AUROC / AUPR of entropy scores) and rotation shift
    compact.py  a pruned MLP as the small dense MLP it is: widths, parameters, FLOPs (live and run)
    latency.py  dense, CSR and compacted forwards timed side by side in rounds; per-round speed-ups; sizes
    bits.py     compression after pruning and after precision reduction: per-layer fixed-point bits (from
                posterior variances, or chosen on validation data), sparse storage, the quantised accuracy
    level.py    one level's metrics (evaluate_level), its probes, the level seeds, the trained weights'
                histograms
    levels.py   LevelEvaluator: a trial's levels evaluated in turn, each reseeded, with progress; the
                trial and suite.stored (a run rebuilt from its artifacts) share it
    __main__.py python -m suite.evaluate: finished runs evaluated again from their stored weights

Import the modules: `from suite.evaluate.level import evaluate_level`.
"""

# The version of the evaluation code, logged with every evaluated run as tag eval_version (runs
# without the tag: 1). Bump it whenever a metric of the same weights would change; a run of an older
# version is re-evaluated from its stored weights (python -m suite.evaluate), not retrained.
# 2: OOD detection and the rotation shift on the full test splits (1: the first 2000 images, a biased
# subset); masks break score ties by |point weight|, then index (prune.pruning_order); per-round
# latency ratios with quartiles; flops_run.
# 3: compression after pruning and after precision reduction per level (bits.py: bits_pNN,
# compression_pruned_pNN, compression_bits_pNN, stored_bytes_pNN, quant_acc_pNN).
# 4: the compacted forward's latency is the faster of reading the input window and gathering the live
# pixels (compact.CompactMLP.readers, tag compact_format_bB_pNN); Bayesian Compression's numeric levels
# rank single weights by magnitude.
EVAL_VERSION = 4
