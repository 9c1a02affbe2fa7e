"""`python -m suite.bench`: this suite's training and inference speed beside its peers, side by side.

Apart from the library: trials never import it. `steps` builds the training steps (ours, plain
PyTorch, the textbook BBB), `peers` the BLiTZ and bayesian-torch steps (the `bench` extra), `race`
times contenders in interleaved rounds, `kernels` splits our steps into their kernels, `inference`
times dense vs sparse prediction, `processes` repeats the kernel table in fresh processes, `widths`
races our steps at several hidden widths, `machine` tells machines apart, `targets` checks the speed
ratios, and `__main__` runs them and writes the JSON. docs/performance.md explains the method and
the figures.
"""
