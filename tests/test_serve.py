"""``tongbao serve`` with several worker processes: the background duties run
once, in a process of their own (:mod:`tongbao.background`) — they deliver
the result notification of a payment made through any worker (PAY-8), come
back if that process dies, and leave nothing running after Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .test_tls import TONGBAO, free_port, serve_environment

pytestmark = pytest.mark.slow


def _environment(database: Path) -> dict[str, str]:
    return serve_environment(
        database, 2, TONGBAO_LOG_JSON="true", TONGBAO_BACKGROUND_INTERVAL_SECONDS="0.5"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _background_pids(log: Path) -> list[int]:
    pids = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and '"background_started"' in line:
            pids.append(int(json.loads(line)["pid"]))
    return pids


@contextmanager
def _serving(tmp_path: Path, template: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    database = tmp_path / "tongbao.db"
    shutil.copy(template, database)
    env = _environment(database)
    seeded = subprocess.run(
        [str(TONGBAO), "demo", "seed"], env=env, cwd=tmp_path, capture_output=True, check=False
    )
    assert seeded.returncode == 0, seeded.stderr.decode()
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(TONGBAO), "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base, server, log
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _pay_and_wait_for_notice(base: str, key: str, amount: str) -> None:
    zhang = {"Authorization": "Bearer tbk_demo_zhangsan"}
    li = httpx.get(f"{base}/v1/accounts", headers={"Authorization": "Bearer tbk_demo_lisi"})
    payee = li.json()["data"][0]["id"]
    paid = httpx.post(
        f"{base}/v1/payments",
        headers={**zhang, "Idempotency-Key": key},
        json={
            "kind": "transfer",
            "amount": amount,
            "payee_account_id": payee,
            "payee_name": "李四",
            "confirm": True,
        },
    )
    assert paid.status_code == 201, paid.text
    serial = paid.json()["serial_no"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        notices = httpx.get(f"{base}/v1/notifications", headers=zhang).json()["data"]
        if any(serial in json.dumps(n, ensure_ascii=False) for n in notices):
            return
        time.sleep(0.2)
    pytest.fail(f"no notification of payment {serial} within 20 s")


def test_one_background_process_delivers_survives_a_crash_and_stops_with_the_server(
    tmp_path: Path, sqlite_template: Path
) -> None:
    with _serving(tmp_path, sqlite_template) as (base, server, log):
        _pay_and_wait_for_notice(base, "serve-1", "1.00")
        (first,) = _background_pids(log)
        assert _alive(first)

        os.kill(first, signal.SIGKILL)  # the duties' process dies: it is started again
        deadline = time.monotonic() + 20
        while len(_background_pids(log)) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        second = _background_pids(log)[-1]
        assert second != first
        _pay_and_wait_for_notice(base, "serve-2", "2.00")

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while _alive(second):
        assert time.monotonic() < deadline, "the background process outlived the server"
        time.sleep(0.1)
