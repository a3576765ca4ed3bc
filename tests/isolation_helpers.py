"""Functions tests/test_isolation.py calls inside a model's process (by `module:function` name)."""

import logging

from ferry.parity import ParityError


def raise_parity(record: dict) -> None:
    raise ParityError(record)


def log_twice(text: str) -> None:
    logger = logging.getLogger("ferry")
    logger.info("%s 1", text)
    logger.warning("%s 2", text)


def verify_concurrently(spec, reconstructed: dict, restored: dict) -> tuple[list[dict], list[tuple[str, str]]]:
    """Every shard of `spec` verified at once from threads, as a model's process does: the shard records, and
    the order in which shards started and ended on each device (("start" | "end", device) events)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import tasks.verify as verify

    shards = spec.shard_paths()
    events: list[tuple[str, str]] = []
    events_lock = threading.Lock()
    original = verify._verify_on

    def traced(device, *args):
        with events_lock:
            events.append(("start", device))
        try:
            return original(device, *args)
        finally:
            with events_lock:
                events.append(("end", device))

    verify._verify_on = traced
    try:
        with ThreadPoolExecutor(len(shards)) as pool:
            records = list(pool.map(lambda i: verify.verify_shard_records(spec, reconstructed, restored, shards[i], i),
                                    range(len(shards))))
    finally:
        verify._verify_on = original
    return records, events
