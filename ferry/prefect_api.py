"""The Prefect API a ferry run talks to: the server `PREFECT_API_URL` names, or an ephemeral one.

With no `PREFECT_API_URL` (the default), Prefect starts a temporary server in a subprocess for the
duration of the command. Its first start creates the database and takes ~13 s on an idle 2-CPU
machine, several times that on a busy one, while Prefect's own start-up budget is 20 s; ferry
raises the budget (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`, a value you set wins), starts
the server itself so it can say so and how long it took, and turns a failure into advice.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

STARTUP_TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT_SECONDS = 600  # ferry's default; Prefect's is 20 s


class PrefectUnavailable(RuntimeError):
    """No Prefect API to run flows on; the message says what to do."""


def startup_timeout() -> int:
    """Seconds the ephemeral server may take to start (the variable, else ferry's default)."""
    value = os.environ.get(STARTUP_TIMEOUT_VARIABLE, str(STARTUP_TIMEOUT_SECONDS))
    try:
        return max(1, int(float(value)))
    except ValueError:
        raise PrefectUnavailable(f"{STARTUP_TIMEOUT_VARIABLE} must be a number of seconds (got {value!r})") from None


def configured_api_url() -> str | None:
    """`PREFECT_API_URL` from the environment or the active Prefect profile, if any."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _not_prefects_start_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Starting temporary server")


def ensure_api(out: TextIO = sys.stderr) -> str:
    """The URL of a Prefect API that answers: the configured one (checked), or a temporary server started
    now, with one progress line on `out`; raise PrefectUnavailable with advice otherwise."""
    import httpx

    url = configured_api_url()
    if url:
        try:
            httpx.get(f"{url.rstrip('/')}/health", timeout=15).raise_for_status()
        except httpx.HTTPError as exc:
            raise PrefectUnavailable(
                f"cannot reach the Prefect API at {url} (PREFECT_API_URL): {type(exc).__name__}: {exc}. Start it "
                "with `prefect server start`, or unset PREFECT_API_URL to let ferry start a temporary one.") from None
        return url
    from prefect.server.api.server import SubprocessASGIServer

    timeout = startup_timeout()
    start = time.monotonic()
    server = SubprocessASGIServer()
    out.write("ferry: starting Prefect's temporary server (no PREFECT_API_URL set) ... ")
    out.flush()
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addFilter(_not_prefects_start_notice)  # this line says it
    try:
        server.start(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - Prefect raises RuntimeError, or whatever the server subprocess did
        out.write("failed\n")
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise PrefectUnavailable(
            f"Prefect's temporary server did not start within {timeout} s ({detail}). On a busy machine give it "
            f"longer ({STARTUP_TIMEOUT_VARIABLE}=1200), or run a server once with `prefect server start` and point "
            "ferry at it: PREFECT_API_URL=http://127.0.0.1:4200/api") from None
    finally:
        prefect_logger.removeFilter(_not_prefects_start_notice)
    out.write(f"up in {time.monotonic() - start:.1f} s\n")
    out.flush()
    return server.api_url


def crash_flow_run(flow_run_id: str, reason: str) -> bool:
    """Mark a flow run that is still Running as Crashed (its process was killed); False when it is not
    running, or the API does not know it (another server's run)."""
    from prefect import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            if run.state is None or not run.state.is_running():
                return False
            client.set_flow_run_state(flow_run_id, Crashed(message=reason), force=True)
    except Exception:  # noqa: BLE001 - e.g. a flow run of another Prefect server; only tidying up
        return False
    return True
