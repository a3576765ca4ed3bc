"""Each model's TensorFlow work in a process of its own, so a crash, a memory blow-up or a hang fails
that model only.

A `ModelProcess` is started on its first call (a fully cached model never starts one) and serves
stage calls, concurrently, until closed. On Linux it is forked from a per-process *zygote* that
imported TensorFlow once (a fork costs milliseconds, a fresh interpreter importing TensorFlow
seconds); elsewhere, or with `FERRY_PROCESS_START=spawn`, it is a fresh interpreter. The zygote
never initialises TensorFlow's devices, so each model process configures its own.

The parent never imports TensorFlow: it sends `module:function` names and small picklable
arguments, and gets back small results, logs, or the stage's exception.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pickle
import queue
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ferry.stages import STAGES

# What a model process needs; imported once by the zygote so forks start warm.
# What a model process needs; imported once by the zygote so forks start warm: TensorFlow, Keras and
# every stage function's module.
PRELOAD = ("tensorflow", "keras", *dict.fromkeys(stage.function.split(":")[0] for stage in STAGES.values()))


class ProcessFailed(RuntimeError):
    """The model's process ended or was stopped while a stage was running in it."""


class RemoteError(RuntimeError):
    """A stage error of a type the parent does not import (TensorFlow's, Keras's): its message, with its
    type name and traceback kept as attributes."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = ""):
        super().__init__(message)
        self.type_name, self.remote_traceback = type_name, remote_traceback

    def __reduce__(self):
        return (RemoteError, (self.type_name, str(self), self.remote_traceback))


def start_method() -> str:
    """`fork` (from the zygote) on Linux, else `spawn`; `FERRY_PROCESS_START` overrides."""
    return os.environ.get("FERRY_PROCESS_START") or ("fork" if sys.platform.startswith("linux") else "spawn")


class ModelProcess:
    """One model's worker process: `call` runs `module:function` in it with a timeout."""

    def __init__(self, name: str, cpu_devices: int | None = None, memory_limit_mb: int | None = None):
        self.name, self.cpu_devices, self.memory_limit_mb = name, cpu_devices, memory_limit_mb
        self.pid: int | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, queue.Queue] = {}  # call id -> its replies (logs, then result or error)
        self._next_id = 0
        self._stopped: str | None = None  # why we stopped it (timeout, memory), for the error message
        self._exit_file: Path | None = None
        self._child: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None  # owns the connection: the only one to close it

    def __enter__(self) -> ModelProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, function: str, *args: Any, inputs: dict[str, Any] | None = None, timeout: float | None = None,
             stage: str = "stage", log: Callable[[int, str], None] | None = None) -> Any:
        """Run `function(*args, **inputs)` in the model's process; raise its error, or ProcessFailed.

        Log records the call emits there are passed to `log(level, message)` in this thread (so a
        Prefect run logger keeps its run context)."""
        replies: queue.Queue = queue.Queue()
        with self._lock:
            self._ensure_started()
            if self._stopped:
                raise ProcessFailed(f"{self.name}: the model's process was stopped: {self._stopped}")
            call_id = self._next_id = self._next_id + 1
            self._pending[call_id] = replies
        try:
            with self._send_lock:
                self._conn.send(("call", call_id, function, args, inputs or {}))
        except OSError:
            pass  # the reader thread reports the process's exit status
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                kind, *payload = replies.get(timeout=None if deadline is None else max(0, deadline - time.monotonic()))
            except queue.Empty:
                self._stop(f"{stage} timed out after {timeout:g} s")
                raise ProcessFailed(f"{self.name}: {stage} did not finish within {timeout:g} s "
                                    f"(run.timeouts.{stage}); its process was stopped") from None
            if kind == "log":
                if log is not None:
                    log(*payload)
            elif kind == "result":
                return payload[0]
            else:
                raise payload[0]

    def close(self) -> None:
        """Stop the process (if started) and wait for its connection to close; pending calls fail."""
        if self._reader is not None:
            self._stop("closed")
            self._reader.join(timeout=10)

    # -- parent side internals -------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._conn is not None:
            return
        zygote = _zygote() if start_method() == "fork" else None
        sock = zygote.connect() if zygote else self._spawn()
        self._conn = Connection(sock.detach())
        _, self.pid = self._conn.recv()  # ("pid", N): the process is up
        if zygote:
            self._exit_file = zygote.folder / f"{self.pid}.exit"
        self._conn.send(("init", {"cpu_devices": self.cpu_devices}))
        self._reader = threading.Thread(target=self._read, name=f"ferry-{self.name}-reader", daemon=True)
        self._reader.start()
        if self.memory_limit_mb:
            threading.Thread(target=self._watch_memory, name=f"ferry-{self.name}-memory", daemon=True).start()

    def _spawn(self) -> socket.socket:
        parent, child = socket.socketpair()
        self._child = subprocess.Popen([sys.executable, "-m", "ferry.isolation", "serve", str(child.fileno())],
                                       pass_fds=[child.fileno()])
        child.close()
        return parent

    def _read(self) -> None:
        conn = self._conn
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # noqa: BLE001 - a message we cannot read: stop, fail what is pending
                self._stop(f"unreadable message from the model's process: {exc!r}")
                break
            replies = self._pending.get(message[1])
            if message[0] != "log":
                self._pending.pop(message[1], None)
            if replies is not None:
                replies.put((message[0], *message[2:]))
        conn.close()  # only here: closing it from another thread could let a new connection reuse the fd
        reason = self._stopped or self._exit_status()
        for replies in list(self._pending.values()):
            replies.put(("error", ProcessFailed(f"{self.name}: the model's process (pid {self.pid}) ended while "
                                                f"a stage was running: {reason}")))
        self._pending.clear()

    def _exit_status(self) -> str:
        """How the process ended: from the zygote's exit file, or the spawned child's return code."""
        code = None
        for _ in range(50):
            if self._child is not None:
                code = self._child.poll()
            elif self._exit_file is not None and self._exit_file.exists():
                code = int(self._exit_file.read_text() or 0)
            if code is not None:
                break
            time.sleep(0.02)
        if code is None:
            return "exit status unknown"
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exited with status {code}"

    def _stop(self, reason: str) -> None:
        """Kill the process; the reader thread then sees the connection end and fails pending calls."""
        if self._stopped is None:
            self._stopped = reason
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._child is not None:
            self._child.wait()

    def _watch_memory(self) -> None:
        limit_kb = self.memory_limit_mb * 1024
        while self._stopped is None:
            used = private_kb(self.pid)
            if used is None:
                return
            if used > limit_kb:
                self._stop(f"its memory ({used // 1024} MB) went over run.memory_limit_mb "
                           f"({self.memory_limit_mb} MB)")
                return
            time.sleep(0.1)


def private_kb(pid: int) -> int | None:
    """Memory `pid` holds privately in kB (Linux: not what a fork shares with its zygote), None once ended."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty") if k in fields)


# -- the zygote: imports TensorFlow once, forks one process per model -----------------------------

class _Zygote:
    """A fork server for this process (one per process, started lazily, ends with it)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ferry-zygote-"))
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)
        self.address = str(self.folder / "socket")
        self.process = subprocess.Popen([sys.executable, "-m", "ferry.isolation", "zygote", str(self.folder)],
                                        stdin=subprocess.PIPE)

    def connect(self) -> socket.socket:
        """A connection to a freshly forked model process (its exit status lands in `<pid>.exit`)."""
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise ProcessFailed(f"ferry's zygote process exited with status {self.process.returncode} "
                                    "while importing TensorFlow; set FERRY_PROCESS_START=spawn to see why")
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(self.address)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise ProcessFailed("ferry's zygote process did not start within 300 s") from None
                time.sleep(0.05)
        return sock


_ZYGOTE: _Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> _Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or _ZYGOTE.process.poll() is not None:
            _ZYGOTE = _Zygote()
        return _ZYGOTE


def _run_zygote(folder: Path) -> None:
    """Preload, then fork a model process per connection; exit when the parent closes our stdin."""
    import ferry  # noqa: F401  (TF environment defaults)

    with quiet_native_stderr():
        for module in PRELOAD:
            importlib.import_module(module)
    children: set[int] = set()

    def reap(*_: object) -> None:
        for pid in list(children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)
                continue
            if done:
                children.discard(pid)
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                (folder / f"{pid}.exit").write_text(str(code))

    signal.signal(signal.SIGCHLD, reap)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "socket.tmp"))
    os.replace(folder / "socket.tmp", folder / "socket")
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    while True:
        try:
            events = selector.select()
        except InterruptedError:
            continue
        for key, _ in events:
            if key.fileobj is sys.stdin:  # the parent is gone: stop (model processes see their EOF)
                for pid in children:
                    os.kill(pid, signal.SIGKILL)
                os._exit(0)
            conn, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                listener.close()
                selector.close()
                _serve(Connection(conn.detach()))
            children.add(pid)
            conn.close()


# -- the model process: serves stage calls, each in its own thread --------------------------------

_CALL = threading.local()


class _ForwardLogs(logging.Handler):
    """Sends log records of a stage call back to the parent, tagged with the call."""

    def __init__(self, send: Callable[[tuple], None]):
        super().__init__(logging.INFO)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        call_id = getattr(_CALL, "id", None)
        if call_id is not None:
            self.send(("log", call_id, record.levelno, record.getMessage()))


# What TensorFlow's native code prints on every start of a machine without CUDA: not news to anyone.
_NATIVE_NOISE = ("All log messages before absl::InitializeLog()", "Could not find cuda drivers",
                 "failed call to cuInit", "Unable to register cu", "computation placer already registered",
                 "oneDNN custom operations are on")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what native code writes to stderr (fd 2) while TensorFlow loads and finds its devices;
    pass on every line but the known start-up notices (`_NATIVE_NOISE`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines()
                    if not any(noise in line for noise in _NATIVE_NOISE)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def _configure_devices(cpu_devices: int | None) -> None:
    """Find the devices (quietly); split the CPU into N logical devices when there is no GPU (the multi-GPU
    path, tested on CPU). GPU memory grows on demand: by default TensorFlow takes a GPU's whole memory in
    the first process, and the next model's process (`run.max_parallel`) would find none left."""
    import tensorflow as tf

    with quiet_native_stderr():
        gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if cpu_devices and not gpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)


def _serve(conn: Connection) -> None:
    """Answer calls until the parent closes the connection, then exit at once (threads and all)."""
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    send(("pid", os.getpid()))
    logger = logging.getLogger("ferry")
    logger.addHandler(_ForwardLogs(send))
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def run(call_id: int, function: str, args: tuple, kwargs: dict[str, Any]) -> None:
        _CALL.id = call_id
        try:
            module, name = function.split(":")
            result = getattr(importlib.import_module(module), name)(*args, **kwargs)
            message = ("result", call_id, result)
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
            message = ("error", call_id, _portable(exc))
        try:
            send(message)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            send(("error", call_id, RemoteError(type(exc).__name__,
                                                f"{function} returned a value that cannot be sent back: {exc}")))

    try:
        while True:
            message = conn.recv()
            if message[0] == "init":
                _configure_devices(message[1]["cpu_devices"])
                continue
            _, call_id, function, args, kwargs = message
            threading.Thread(target=run, args=(call_id, function, args, kwargs), daemon=True).start()
    except (EOFError, OSError):
        pass
    os._exit(0)


# Exceptions sent back as themselves: their modules import without TensorFlow (the parent never does).
_PORTABLE_MODULES = ("builtins", "ferry.isolation", "ferry.mapping.namemap", "ferry.mapping.transforms", "ferry.parity",
                     "ferry.shards", "ferry.spec", "ferry.tf1.facts")


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when the parent can unpickle it cheaply, else a RemoteError that keeps its
    type name, message and traceback."""
    if type(exc).__module__ in _PORTABLE_MODULES:
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - fall through to RemoteError
            pass
    return RemoteError(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))


def main(argv: list[str]) -> None:
    if argv[0] == "zygote":
        _run_zygote(Path(argv[1]))
    elif argv[0] == "serve":
        import ferry  # noqa: F401

        _serve(Connection(int(argv[1])))


if __name__ == "__main__":
    # Run this module's functions under its importable name, so the classes it pickles are
    # `ferry.isolation.X`, not `__main__.X`.
    from ferry import isolation

    isolation.main(sys.argv[1:])
