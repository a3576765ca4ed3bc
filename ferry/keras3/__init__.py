"""The Keras 3 side: building the model a spec describes, ferry's own layers, running the model.

Importing this package imports nothing; `ferry.keras3.layers` needs only Keras (any backend), so a
`.keras` file that uses ferry's layers loads with `import ferry.keras3.layers`.
"""
