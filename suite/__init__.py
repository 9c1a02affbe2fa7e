"""bayes-prune-bench: do Bayes-by-Backprop networks survive unstructured pruning better than SGD and Dropout?"""
__version__ = "0.1.0"
