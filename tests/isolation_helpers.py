"""Functions tests/test_isolation.py calls inside a model's process (by `module:function` name)."""

import logging

from ferry.parity import ParityError


def raise_parity(record: dict) -> None:
    raise ParityError(record)


def log_twice(text: str) -> None:
    logger = logging.getLogger("ferry")
    logger.info("%s 1", text)
    logger.warning("%s 2", text)
