"""Running a function in a child process with a timeout, so one pathological input cannot hang a worker.

Threads cannot be interrupted in Python and `signal.alarm` works only in the main thread (Beam runs
DoFns in worker threads), so the only reliable per-item timeout is a process that can be killed.
The child lives as long as the DoFn and is replaced only after a timeout or a crash. Its start-up
(spawn, imports, `init`) is waited for separately and never counts against an item's timeout; the function
and its fixed arguments travel once, at the start, so each call costs one pickle round trip of the item
and its result. An exception raised in the child is raised again in the parent as the same type, so a
caller can tell an ImportError from a bad item.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import traceback
from collections.abc import Callable
from typing import Any


class WorkerTimeout(TimeoutError):
    pass


class WorkerCrashed(RuntimeError):
    pass


def _error_message(err: BaseException) -> tuple[BaseException | None, str]:
    text = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # an exception that cannot travel is reported by its text
        return None, text
    return err, text


def _serve(conn, fn: Callable[..., Any], init: Callable[[], Any] | None) -> None:
    try:
        if init is not None:
            init()
    except BaseException as err:  # report why the child cannot work, then stop
        conn.send(("error", *_error_message(err)))
        return
    conn.send(("ready", None, ""))
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            result = fn(*args)
        except BaseException as err:  # report, keep serving
            conn.send(("error", *_error_message(err)))
            continue
        conn.send(("ok", result, ""))


class IsolatedWorker:
    """`call(*args)` runs `fn(*args)` in a long-lived child; `WorkerTimeout` after `timeout_s` seconds."""

    def __init__(self, fn: Callable[..., Any], timeout_s: float, init: Callable[[], Any] | None = None,
                 startup_timeout_s: float = 300.0):
        self.fn = fn
        self.init = init
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child and wait until it is ready (imports done); raises what stopped it from starting."""
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.fn, self.init), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not self._conn.poll(self.startup_timeout_s):
            self._kill()
            raise WorkerCrashed(f"worker did not start within {self.startup_timeout_s}s")
        self._answer()

    def call(self, *args: Any) -> Any:
        if self._proc is None or not self._proc.is_alive():
            self.start()
        self._conn.send(args)
        if not self._conn.poll(self.timeout_s):
            self._kill()
            raise WorkerTimeout(f"no answer within {self.timeout_s}s")
        return self._answer()

    def _answer(self) -> Any:
        try:
            status, value, text = self._conn.recv()
        except (EOFError, OSError) as err:
            self._kill()
            raise WorkerCrashed(f"worker died: {err}") from err
        if status == "error":
            if value is None:
                raise WorkerCrashed(text)
            value.add_note(f"raised in the isolated worker:\n{text}")
            raise value
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
