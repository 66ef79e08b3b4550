"""The background duties in a process of their own.

``tongbao serve`` with several HTTP worker processes runs
:meth:`Platform.run_background <tongbao.platform.Platform.run_background>`
(notification delivery, hold expiry, bank status, scheduled payments, audit
checkpoints) once, in this child process, instead of in a thread of every
worker: the workers' event loops then never wait for the GIL behind a
background batch, and the duties are not polled N times over. The duties
stay safe to run concurrently (each step is guarded by row locks and state
checks), so a second copy elsewhere — a second server — is harmless.

The child ignores Ctrl-C (the terminal sends it to the whole process group;
the server shuts down first, then stops the child), stops when asked or when
its parent is gone, and is restarted if it dies.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from typing import Any

import structlog

log = structlog.get_logger("tongbao.background")

_RESTART_DELAY_SECONDS = 1.0


def _child(parent_pid: int) -> None:
    """Entry point of the background process (spawned: settings come from the environment).

    The stop signal is a local event set by SIGTERM or by the parent's death,
    never one shared with the parent: a process killed while holding a shared
    lock would leave it locked for every later one."""
    from tongbao.config import Settings  # noqa: PLC0415 - the child's own imports
    from tongbao.logs import configure_logging  # noqa: PLC0415
    from tongbao.platform import Platform  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def orphaned() -> None:  # the server was killed outright: do not linger
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                stop.set()

    threading.Thread(target=orphaned, name="tongbao-parent-watch", daemon=True).start()
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    platform = Platform(settings).start()
    try:
        platform.run_background(stop)
    finally:
        platform.close()


class BackgroundProcess:
    """Runs the background duties in a child process until :meth:`close`."""

    def __init__(self) -> None:
        self._context = mp.get_context("spawn")
        self._closing = threading.Event()
        self._process: Any = None
        self._watcher: threading.Thread | None = None

    def start(self) -> BackgroundProcess:
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name="tongbao-background-watch", daemon=True
        )
        self._watcher.start()
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _spawn(self) -> None:
        self._process = self._context.Process(
            target=_child, args=(os.getpid(),), name="tongbao-background"
        )
        self._process.start()
        log.info("background_started", pid=self._process.pid)

    def _watch(self) -> None:
        while not self._closing.is_set():
            self._process.join(timeout=1.0)
            if self._process.exitcode is not None and not self._closing.is_set():
                log.error("background_died", exitcode=self._process.exitcode)
                if not self._closing.wait(_RESTART_DELAY_SECONDS):
                    self._spawn()

    def close(self, timeout: float = 15.0) -> None:
        """Ask the child to finish its current step (SIGTERM) and wait for it."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5.0)
        if self._process is not None:
            if self._process.exitcode is None:
                self._process.terminate()
            self._process.join(timeout=timeout)
            if self._process.exitcode is None:
                self._process.kill()
                self._process.join()
