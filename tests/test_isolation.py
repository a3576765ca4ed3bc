"""A model's process (ferry.isolation): results, errors, logs, crashes, timeouts, both start methods."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from ferry.isolation import ModelProcess, ProcessFailed, RemoteError
from ferry.parity import ParityError

# A model's process imports TensorFlow and Keras (ModelProcess preloads them): seconds per process.
pytestmark = pytest.mark.tf1


@pytest.fixture(params=["fork", "spawn"])
def start(request, monkeypatch):
    monkeypatch.setenv("FERRY_PROCESS_START", request.param)
    return request.param


def test_calls_run_in_another_process_and_errors_come_back(start):
    with ModelProcess("m") as process:
        assert process.call("os:getpid") == process.pid != os.getpid()
        record = {"shard": "s.npz", "outputs": {"y": {"passed": False, "max_abs_err": 1.0, "atol": 0.0, "rtol": 0.0}}}
        with pytest.raises(ParityError) as parity:  # ferry's own errors come back as themselves
            process.call("tests.isolation_helpers:raise_parity", record)
        assert parity.value.record == record
        with pytest.raises(RemoteError) as remote:  # others (TensorFlow's, say) keep their type name
            process.call("json:loads", "{bad")
        assert remote.value.type_name == "JSONDecodeError" and "JSONDecodeError" in remote.value.remote_traceback


def test_logs_of_a_call_reach_the_caller(start):
    seen: list[tuple[int, str]] = []
    with ModelProcess("m") as process:
        process.call("tests.isolation_helpers:log_twice", "hello", log=lambda level, msg: seen.append((level, msg)))
    assert seen == [(logging.INFO, "hello 1"), (logging.WARNING, "hello 2")]


def test_a_crash_or_a_hang_fails_the_call_with_the_reason(start):
    with ModelProcess("m") as process:
        with pytest.raises(ProcessFailed, match="ended while a stage was running: killed by SIGKILL"):
            process.call("os:kill", process.call("os:getpid"), signal.SIGKILL, stage="restore")
    with ModelProcess("m") as process:
        with pytest.raises(ProcessFailed, match=r"restore did not finish within 0.5 s \(run.timeouts.restore\)"):
            process.call("time:sleep", 60, timeout=0.5, stage="restore")
        with pytest.raises(ProcessFailed, match="was stopped"):  # no second call into a stopped process
            process.call("os:getpid")


def test_processes_opened_and_closed_back_to_back_never_mix_up_their_connections():
    for i in range(30):
        with ModelProcess(f"m{i}") as process:
            assert process.call("os:getpid") == process.pid
