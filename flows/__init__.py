"""Prefect flows: thin wiring of the stages in `tasks/`."""

import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
