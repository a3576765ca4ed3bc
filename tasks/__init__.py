"""ferry's stages as Prefect tasks: plain typed functions that hand each other paths and small records."""

import ferry  # noqa: F401  (first: environment defaults for TensorFlow and Prefect)

# isort: split
import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run, else the `ferry` logger (plain calls)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("ferry")
