"""Everything that reads TF1 artifacts: loading a graph (once per process), facts read from it, its
inventory, `architecture: auto`, `ferry draft-spec`, and running it as the reference.

The TensorFlow side of the boundary: only a model's own process imports these modules.
"""
