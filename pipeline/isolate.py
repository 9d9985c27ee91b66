"""Running a function in a child process with a timeout, so one pathological input cannot hang a worker.

Threads cannot be interrupted in Python and `signal.alarm` works only in the main thread (Beam runs
DoFns in worker threads), so the only reliable per-item timeout is a process that can be killed.
The child lives as long as the DoFn and is restarted only after a timeout or a crash; each call
costs one pickle round trip, which is small next to HTML extraction.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from typing import Any


class WorkerTimeout(TimeoutError):
    pass


class WorkerCrashed(RuntimeError):
    pass


def _serve(conn, fn: Callable[..., Any]) -> None:
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            conn.send(("ok", fn(*args)))
        except BaseException as err:  # report, keep serving
            conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"))


class IsolatedWorker:
    def __init__(self, fn: Callable[..., Any], timeout_s: float):
        self.fn = fn
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.fn), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def call(self, *args: Any) -> Any:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send(args)
        if not self._conn.poll(self.timeout_s):
            self._kill()
            raise WorkerTimeout(f"no answer within {self.timeout_s}s")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as err:
            self._kill()
            raise WorkerCrashed(f"worker died: {err}") from err
        if status == "error":
            raise WorkerCrashed(value)
        return value

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except OSError:
                pass
        self._kill()
