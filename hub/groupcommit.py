"""Group commit: concurrent callers share one batch (one query, one transaction) instead of one each.

While one caller (the leader) runs a batch, the others queue their items; when it is done,
its callers return and one of the waiting ones leads the next batch with every item queued
meanwhile. One caller at a time makes batches of one; more share the work. Used by the
intake (storing accepted envelopes) and the routing worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from hub.errors import Rejected

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T, R]):
    item: T
    outcome: R | Rejected | None = None
    error: BaseException | None = None
    done: bool = False


class GroupCommit(Generic[T, R]):
    def __init__(self, run: Callable[[Sequence[T]], Sequence[R | Rejected]], *, linger: float = 0.0) -> None:
        """``run`` handles a batch: one outcome per item (a ``Rejected`` is raised to that item's caller).

        ``linger``: seconds a leader waits for more items before running (worth it with many callers).
        """
        self.run = run
        self.linger = linger
        self._pending: list[_Slot[T, R]] = []
        self._turn = threading.Condition()
        self._leading = False

    def submit(self, item: T) -> R:
        """The outcome of ``item``, run in some caller's batch; raises its ``Rejected`` or the batch's error."""
        slot: _Slot[T, R] = _Slot(item)
        with self._turn:
            self._pending.append(slot)
            while self._leading and not slot.done:
                self._turn.wait()
            if not slot.done:  # lead: run everything waiting now, this one included
                self._leading = True
                if self.linger > 0:
                    self._turn.wait(self.linger)  # let the other callers' items join this batch
                group, self._pending = self._pending, []
        if not slot.done:
            try:
                outcomes = self.run([waiting.item for waiting in group])
            except BaseException as exc:  # every caller of the group learns it (Unavailable, most often)
                for waiting in group:
                    waiting.error, waiting.done = exc, True
            else:
                for waiting, outcome in zip(group, outcomes, strict=True):
                    waiting.outcome, waiting.done = outcome, True
            finally:
                with self._turn:
                    self._leading = False
                    self._turn.notify_all()  # the group's callers return; one of the others leads next
        if slot.error is not None:
            raise slot.error
        if isinstance(slot.outcome, Rejected):
            raise slot.outcome
        return slot.outcome  # type: ignore[return-value]
