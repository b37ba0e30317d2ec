"""Spawned processes that a benchmark talks to over a pipe."""

from __future__ import annotations

import contextlib
import multiprocessing
from typing import Any


def spawn_context() -> Any:
    # Not fork: this process runs threads, and a forked child would inherit their locks.
    return multiprocessing.get_context("spawn")


class Child:
    """A spawned process (not forked: the parent may run threads) and its end of a pipe."""

    def __init__(self, target: Any, *args: Any) -> None:
        context = spawn_context()
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        child.close()

    def ask(self, order: Any) -> Any:
        self.conn.send(order)
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()
