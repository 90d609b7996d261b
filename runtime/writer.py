"""The worker's writer thread: records finished mini-batches while run() works on the next one.

A mini-batch's file work (its result file, its done record, two log lines) costs 0.1-0.4 ms of a
core and, when the disk is busy, waits of several milliseconds for the filesystem journal. Done
between two run() calls, all of it is lost to the model. The worker hands each finished
mini-batch to this thread instead and goes straight back to claiming and to run(); the thread does
what the worker did, in the same order for each mini-batch (result file, then the done record,
then its log lines), so the queue's crash safety is unchanged: a worker killed with mini-batches
still waiting here leaves their claims in `running/<worker>/`, and they go back to the queue like
any dead worker's claims.

The queue between the two is bounded (`DEPTH` calls): the worker waits when the thread is that far
behind, so a slow disk slows scoring down instead of piling up results in memory and claims that
a crash would send back.

Errors are never dropped: the thread stops at its first one and keeps it, and the worker raises it
at its next hand-off or at `close()`. After a failure nothing more is written, so a full disk ends
the worker as before (its claims released untouched, exit 73) once `abort()` has stopped the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

DEPTH = 4  # calls waiting at most: absorbs a journal stall of a few run() calls, holds few claims
_PUT_WAIT = 0.05  # how often a worker waiting for room looks whether the thread has failed
_Call = tuple  # (fn, args, kwargs): the precise type needs Python 3.9 at run time


class Writer:
    """One background thread running submitted calls in order; the first failure is kept and re-raised."""

    def __init__(self, depth: int = DEPTH) -> None:
        # each call: (fn, args, kwargs); None tells the thread to stop
        self._calls: queue.Queue[_Call | None] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._work, name="bepbuild-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run `fn(*args, **kwargs)` in the thread after everything submitted before.

        Waits while the queue is full; raises the thread's error instead if it has failed.
        """
        self._put((fn, args, kwargs))

    def check(self) -> None:
        """Raise the thread's first error, if it had one."""
        if self._error is not None:
            raise self._error

    def wait(self) -> None:
        """Return once every call submitted so far has run; raise the thread's error if one failed."""
        done = threading.Event()
        self._put((done.set, (), {}))
        while not done.wait(_PUT_WAIT):
            self.check()
        self.check()

    def close(self) -> None:
        """Wait until every submitted call has run; raise the thread's error if one failed."""
        if self._thread.is_alive():
            self._put(None)
            self._thread.join()
        self.check()

    def abort(self) -> None:
        """Stop after the call in progress, dropping the rest; return when the thread is gone.

        For a worker that is about to give its claims back: nothing may be written after this.
        """
        self._aborted = True
        try:
            self._calls.put_nowait(None)  # wakes a thread waiting for work; a full queue is seen by _aborted
        except queue.Full:
            pass
        self._thread.join()

    def _put(self, call: _Call | None) -> None:
        while True:
            self.check()
            try:
                self._calls.put(call, timeout=_PUT_WAIT)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if call is None or self._aborted:
                return
            fn, args, kwargs = call
            try:
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: B036 - whatever it is, the worker must see it
                self._error = exc
                return
