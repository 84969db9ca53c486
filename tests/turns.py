"""Threads that call a compiled model in strict turns (0, 1, 0, 1, ...): the interleaving that
shares one compiled model's graphs while each thread keeps its own generation."""

from __future__ import annotations

import threading
from typing import Any, Callable

InTurn = Callable[[Callable[[], Any]], Any]


class _Stopped(Exception):
    """Another thread failed: this thread stops quietly (that error is the one raised)."""


def take_turns(*workers: Callable[[InTurn], None], timeout: float = 120) -> None:
    """Run each worker in its own thread; a worker calls `in_turn(fn)` for whatever must run in
    its turn (the model call) and does the rest of its loop outside it. Returns once all have
    finished; the first error of any worker is raised here."""
    turns = [threading.Semaphore(1 if k == 0 else 0) for k in range(len(workers))]
    errors: list[BaseException] = []

    def turn_of(k: int) -> InTurn:
        def in_turn(fn: Callable[[], Any]) -> Any:
            if not turns[k].acquire(timeout=timeout):  # a worker ended with turns left to pass
                raise TimeoutError(f"worker {k}: its turn did not come within {timeout} s")
            if errors:
                raise _Stopped
            try:
                return fn()
            finally:
                turns[(k + 1) % len(turns)].release()
        return in_turn

    def run(k: int) -> None:
        try:
            workers[k](turn_of(k))
        except _Stopped:
            pass
        except BaseException as error:  # re-raised by the calling thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
