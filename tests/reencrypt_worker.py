"""Child process for test_keyring.py: runs ``reencrypt`` over the test notes
table in small batches and prints a line after each committed batch. The
parent kills it with SIGKILL part-way."""

from __future__ import annotations

import sys
import time

from pydantic import SecretStr

from tongbao.clock import SystemClock
from tongbao.config import Settings
from tongbao.security import EncryptedColumn, KeyRing
from tongbao.storage import Database

NOTES = "kr_test_notes"
COLUMNS = (
    EncryptedColumn(NOTES, "title", "owner", "customer", "notes.title"),
    EncryptedColumn(NOTES, "body", "owner", "customer", "notes.body"),
)


def main(database_url: str, master_key: str, batch_size: int, pause: float) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        database_url=database_url,
        master_key=SecretStr(master_key),
    )
    db = Database(database_url, settings=settings)
    ring = KeyRing.from_settings(settings, SystemClock())
    db.run(ring.initialize)

    def progress(done: int, total: int) -> None:
        print(f"BATCH {done} {total}", flush=True)
        time.sleep(pause)

    report = ring.reencrypt(db, COLUMNS, batch_size=batch_size, progress=progress)
    print(f"FINISHED {report.subjects}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
