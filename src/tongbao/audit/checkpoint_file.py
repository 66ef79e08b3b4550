"""The checkpoint file: signed checkpoints of the audit chain, one JSON line each.

Lines are only ever appended, under an exclusive file lock (several server
processes may checkpoint at once) and with ``fsync``, so a checkpoint on
disk survives a crash. Where the file lives is ``TONGBAO_AUDIT_CHECKPOINT_FILE``;
in production it should be on storage the database administrators cannot
rewrite (another host, a write-once bucket, or shipped there by the log
collector) — the checkpoints are only as trustworthy as that separation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tongbao.audit.checkpoints import Checkpoint, CheckpointSigner, parse_line, to_line
from tongbao.audit.model import CheckpointProblem

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per file then
    fcntl = None  # type: ignore[assignment]

_TAIL_BYTES = 4096  # a line is about 250 bytes


@dataclass(frozen=True, slots=True)
class LoadedCheckpoints:
    """The checkpoint file read and checked: the lines whose signature holds,
    and what is wrong with the others."""

    trusted: tuple[Checkpoint, ...]
    problems: tuple[CheckpointProblem, ...]


class CheckpointFile:
    """Reads and appends the checkpoint file; signs with a key grown from ``seed``.

    ``seed`` may be a callable so that the key is only derived (and the master
    key only needed) when a checkpoint is first written or checked.
    """

    def __init__(self, path: Path, seed: bytes | Callable[[], bytes]) -> None:
        self.path = Path(path)
        self._seed = seed
        self._signer: CheckpointSigner | None = None

    @property
    def signer(self) -> CheckpointSigner:
        if self._signer is None:
            seed = self._seed() if callable(self._seed) else self._seed
            self._signer = CheckpointSigner(seed)
        return self._signer

    def load(self) -> LoadedCheckpoints:
        """Every line, each signature checked; an absent file holds no checkpoints."""
        trusted: list[Checkpoint] = []
        problems: list[CheckpointProblem] = []
        if not self.path.exists():
            return LoadedCheckpoints((), ())
        with self.path.open("r", encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                checked = self._check(number, line)
                if isinstance(checked, Checkpoint):
                    trusted.append(checked)
                else:
                    problems.append(checked)
        return LoadedCheckpoints(tuple(trusted), tuple(problems))

    def _check(self, number: int, line: str) -> Checkpoint | CheckpointProblem:
        try:
            cp = parse_line(line)
        except ValueError as exc:
            return CheckpointProblem(number, f"unreadable ({exc})")
        if cp.key_id != self.signer.key_id:
            return CheckpointProblem(
                number, f"signed by an unknown key {cp.key_id!r} (seq {cp.seq}): forged"
            )
        if not self.signer.verify(cp):
            return CheckpointProblem(
                number, f"the signature does not verify (claims seq {cp.seq}): altered or forged"
            )
        return cp

    def last(self) -> Checkpoint | CheckpointProblem | None:
        """The newest line, checked; reads only the end of the file."""
        if not self.path.exists():
            return None
        with self.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
        lines = [line for line in tail if line.strip()]
        if not lines:
            return None
        # The line number is not known without reading everything; -1 says "the last".
        return self._check(-1, lines[-1])

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive right to append, across processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, cp: Checkpoint) -> None:
        """Append one line durably; call under :meth:`locked`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (to_line(cp) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a line cut short by a crash stays on its own
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
