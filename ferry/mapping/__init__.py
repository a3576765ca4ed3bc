"""The name map: which checkpoint keys become which Keras weights, through which transform.

numpy only, no TensorFlow: the rules are data, every decision is testable without a graph.
"""
