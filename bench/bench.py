"""Tongbao benchmark: one run, one machine, one table.

Phases (``bench/run --help``):

1. pgbench TPC-B (scale 10, 8 clients) — the reference for this machine.
2. Wallet-to-wallet transfers through the service layer on PostgreSQL, one
   per database transaction, ``synchronous_commit=on``, several worker
   processes as a deployment would run them — twice: through the ledger
   service (a journal entry moving money between two wallets: the
   counterpart of a TPC-B transaction, and the figure compared with it), and
   through the payment service (a whole payment order: serial number, state
   history, two notifications, the journal entry).
3. Transfers through the batched posting path on PostgreSQL (many per
   transaction, TigerBeetle style).
4. The same two paths on SQLite (one writer).
5. p50/p99 latency of ``POST /v1/payments`` (a confirmed transfer) over HTTP
   at a fixed request rate, measured from each request's scheduled send time
   (so a slow server cannot hide its queueing: no coordinated omission).

The last line is machine-readable:
``RESULT per_transfer_vs_pgbench=<x> batched_vs_pgbench=<y> http_p99_ms=<z>``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from tongbao.auth import PrincipalType
from tongbao.config import Settings
from tongbao.customers import Customer, CustomerKind
from tongbao.ledger import transfer_postings, verify_ledger
from tongbao.ledger.batch import BatchTransfer
from tongbao.logs import configure_logging
from tongbao.payments import PaymentKind, PaymentRequest
from tongbao.platform import Platform
from tongbao.storage import Database
from tongbao.storage.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get(
    "TONGBAO_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
console = Console(stderr=True)


@dataclass
class Result:
    name: str
    value: float
    unit: str
    note: str = ""


# --- databases --------------------------------------------------------------------


# A fixed, public key: the benchmark's databases hold only made-up customers.
BENCH_MASTER_KEY = "YmVuY2gtb25seS1tYXN0ZXIta2V5LW5vdC1zZWNyZXQ="

def pg_url(name: str) -> str:
    return sa.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)


def fresh_pg(name: str) -> str:
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return pg_url(name)


def drop_pg(name: str) -> None:
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def settings_for(url: str, **extra: Any) -> Settings:
    options: dict[str, Any] = {"db_pool_size": 4, "familiar_payee_check": False, **extra}
    return Settings(
        _env_file=None, env="test", database_url=url, master_key=BENCH_MASTER_KEY, **options
    )  # type: ignore[call-arg]


# --- 1. pgbench ---------------------------------------------------------------------


def run_pgbench(seconds: int) -> Result:
    url = sa.make_url(fresh_pg("tongbao_bench_pgbench"))
    args = [
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
    ]
    subprocess.run(
        ["pgbench", *args, "-i", "-s", "10", "-q", url.database or ""],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["pgbench", *args, "-c", "8", "-j", "2", "-T", str(seconds), url.database or ""],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    drop_pg("tongbao_bench_pgbench")
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    return Result("pgbench TPC-B (scale 10, 8 clients)", tps, "tps", "reference")


# --- population ------------------------------------------------------------------------


def populate(platform: Platform, customers: int, balance_fen: int) -> list[Customer]:
    """Customers with funded wallets, funded in one batch from the bank clearing account."""

    def create(conn: sa.Connection) -> list[Customer]:
        made = [
            platform.customers.register(
                conn,
                kind=CustomerKind.PERSON,
                name=f"客户{i}",
                policy_version=platform.settings.privacy_policy_version,
            )
            for i in range(customers)
        ]
        clearing = platform.ledger.account_id_by_code(conn, "bank_clearing:SIMBANK")
        platform.ledger.post_batch(
            conn, [BatchTransfer(clearing, c.account_id, balance_fen) for c in made]
        )
        return made

    return platform.db.run(create)


# --- 2/4. per-transfer service path ------------------------------------------------------


def _transfer_worker(
    url: str,
    customer_ids: list[str],
    names: dict[str, str],
    seconds: float,
    threads: int,
    ready: Any,
    out: Any,
    layer: str,
) -> None:
    configure_logging("WARNING")
    platform = Platform(settings_for(url, db_pool_size=threads + 1)).start()
    customers = platform.db.read(
        lambda conn: [platform.customers.get(conn, c) for c in customer_ids]
    )
    # Steady state, as in a running server: account attributes are cached.
    platform.db.read(
        lambda conn: platform.ledger.static_accounts(conn, [c.account_id for c in customers])
    )
    counts = [0] * threads
    failures = [0] * threads

    ready.wait()  # every worker is set up: start together
    start_at = time.time()

    def work(slot: int) -> None:
        rng = random.Random(slot * 7919 + os.getpid())
        deadline = start_at + seconds
        while time.time() < deadline:
            payer, payee = rng.sample(customers, 2)
            amount = rng.randint(1, 500)
            try:
                if layer == "ledger":
                    postings = transfer_postings(payer.account_id, payee.account_id, amount)
                    platform.db.run(
                        partial(platform.ledger.transfer, postings=postings, description="bench")
                    )
                else:
                    request = PaymentRequest(
                        kind=PaymentKind.TRANSFER,
                        amount=amount,
                        payee_account_id=payee.account_id,
                        payee_name=names[payee.account_id],
                    )
                    platform.db.run(partial(platform.payments.pay, customer=payer, request=request))
                counts[slot] += 1
            except Exception:  # counted and reported in the table
                failures[slot] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.time() - start_at
    platform.close()
    out.put((sum(counts), sum(failures), elapsed))


def collect(procs: list[Any], queue: Any, timeout: float) -> list[Any]:
    """One result per worker process; fail loudly if a worker died."""
    results = []
    deadline = time.time() + timeout
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=1))
        except Exception:  # queue.Empty: check the workers are still alive
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.time() > deadline:
                for p in procs:
                    p.kill()
                raise SystemExit(
                    f"benchmark worker failed (exit codes {[p.exitcode for p in procs]})"
                ) from None
    for p in procs:
        p.join()
    return results


def run_per_transfer(
    url: str,
    customers: list[Customer],
    seconds: float,
    processes: int,
    threads: int,
    layer: str = "ledger",
) -> tuple[float, int]:
    names = {c.account_id: c.name for c in customers}
    ids = [c.id for c in customers]
    context = mp.get_context("spawn")
    queue: Any = context.Queue()
    ready = context.Barrier(processes)
    procs = [
        context.Process(
            target=_transfer_worker,
            args=(url, ids, names, seconds, threads, ready, queue, layer),
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    done = collect(procs, queue, seconds + 120)
    return sum(d[0] for d in done) / max(d[2] for d in done), sum(d[1] for d in done)


# --- 3/4. batched path ------------------------------------------------------------------


def _batch_worker(
    url: str, account_ids: list[str], seconds: float, batch: int, ready: Any, out: Any
) -> None:
    configure_logging("WARNING")
    platform = Platform(settings_for(url)).start()
    rng = random.Random(os.getpid())
    posted = refused = 0
    ready.wait()
    start_at = time.time()
    deadline = start_at + seconds
    while time.time() < deadline:
        transfers = [
            BatchTransfer(*rng.sample(account_ids, 2), rng.randint(1, 500)) for _ in range(batch)
        ]
        results = platform.db.run(partial(platform.ledger.post_batch, transfers=transfers))
        posted += sum(r.error is None for r in results)
        refused += sum(r.error is not None for r in results)
    elapsed = time.time() - start_at
    platform.close()
    out.put((posted, refused, elapsed))


def run_batched(
    url: str, customers: list[Customer], seconds: float, processes: int, batch: int
) -> tuple[float, int]:
    """Each process posts among its own shard of accounts, as shards would."""
    accounts = [c.account_id for c in customers]
    shards = [accounts[i::processes] for i in range(processes)]
    context = mp.get_context("spawn")
    queue: Any = context.Queue()
    ready = context.Barrier(processes)
    procs = [
        context.Process(target=_batch_worker, args=(url, shard, seconds, batch, ready, queue))
        for shard in shards
    ]
    for p in procs:
        p.start()
    done = collect(procs, queue, seconds + 120)
    return sum(d[0] for d in done) / max(d[2] for d in done), sum(d[1] for d in done)


# --- 5. HTTP latency --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text(encoding='utf-8')[-2000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server did not come up within 120 s")


class _Connection:
    """A keep-alive HTTP/1.1 connection speaking just enough of the protocol.

    The load generator must cost far less than the server it measures on the
    same two cores; httpx spends about a millisecond per request, this a
    fraction of that (requests are pre-built bytes, responses are read by
    Content-Length).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


def _post(host: str, path: str, token: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _open_loop(
    port: int, tokens: list[tuple[str, str, str]], rate: float, seconds: float, tag: str
) -> tuple[list[float], int]:
    """Send ``rate`` requests per second on schedule; latency counts from the schedule."""
    rng = random.Random(1)
    total = int(rate * seconds)
    requests = []
    for i in range(total):
        token, payee, name = tokens[rng.randrange(len(tokens))]
        body = orjson.dumps(
            {
                "kind": "transfer",
                "amount": "0.01",
                "payee_account_id": payee,
                "payee_name": name,
                "confirm": True,
            }
        )
        requests.append(_post("127.0.0.1", "/v1/payments", token, f"{tag}-{i}", body))
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def connection() -> _Connection:
        if not idle.empty():
            return idle.get_nowait()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return _Connection(reader, writer)

    async def one(raw: bytes, scheduled: float) -> None:
        nonlocal errors
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await connection()
        status = await conn.request(raw)
        latencies.append((time.perf_counter() - scheduled) * 1000)
        idle.put_nowait(conn)
        if status != 201:
            errors += 1

    start = time.perf_counter() + 0.2
    await asyncio.gather(*(one(raw, start + i / rate) for i, raw in enumerate(requests)))
    while not idle.empty():
        idle.get_nowait().writer.close()
    return latencies, errors


def run_http(
    url: str, customers: list[Customer], rate: float, seconds: float, workers: int
) -> tuple[float, float, int]:
    platform = Platform(settings_for(url)).start()
    pairs = []
    for payer, payee in zip(customers[:200], customers[200:400], strict=True):
        token = platform.db.run(
            lambda conn, p=payer: platform.auth.issue_token(
                conn, PrincipalType.CUSTOMER, p.id, label="bench"
            )
        )
        pairs.append((token, payee.account_id, payee.name))
    platform.close()
    port = free_port()
    env = {
        **os.environ,
        "TONGBAO_DATABASE_URL": url,
        "TONGBAO_MASTER_KEY": BENCH_MASTER_KEY,
        "TONGBAO_LOG_LEVEL": "WARNING",
        "TONGBAO_HTTP_WORKERS": str(workers),
        "TONGBAO_ENV": "test",
    }
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        prefix="tongbao-bench-serve-", suffix=".log", delete=False
    )
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/tongbao"), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_serving(f"http://127.0.0.1:{port}", server, Path(log.name))
        asyncio.run(_open_loop(port, pairs, rate, 2, "warm"))
        latencies, errors = asyncio.run(_open_loop(port, pairs, rate, seconds, "run"))
    except Exception:
        console.print(Path(log.name).read_text(encoding="utf-8")[-3000:], markup=False)
        raise
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        Path(log.name).unlink(missing_ok=True)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return p50, p99, errors


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short phases; under a minute")
    parser.add_argument("--processes", type=int, default=2, help="service-path worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per service worker")
    parser.add_argument("--batch", type=int, default=8000, help="transfers per batch")
    parser.add_argument("--rate", type=float, default=200, help="HTTP requests per second")
    parser.add_argument("--http-workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()
    seconds = 4 if args.quick else 20
    configure_logging("WARNING")
    results: list[Result] = []

    console.print(f"pgbench ({seconds}s) …")
    reference = run_pgbench(seconds)
    results.append(reference)

    # HTTP first, on a database of its own: after the bulk phases PostgreSQL
    # checkpoints and vacuums hundreds of thousands of rows, and every commit
    # would wait on the disk behind that — a measure of those, not of us.
    console.print("HTTP latency …")
    http_url = fresh_pg("tongbao_bench_http")
    db = Database(http_url)
    upgrade(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
    db.dispose()
    platform = Platform(settings_for(http_url)).start()
    http_customers = populate(platform, 2_000, 50_000_000)
    platform.close()
    p50, p99, http_errors = run_http(
        http_url, http_customers, args.rate, 6 if args.quick else 30, args.http_workers
    )
    drop_pg("tongbao_bench_http")

    console.print("PostgreSQL: populating …")
    url = fresh_pg("tongbao_bench")
    db = Database(url)
    upgrade(db)
    db.dispose()
    platform = Platform(settings_for(url)).start()
    customers = populate(platform, 2_000, 50_000_000)
    platform.close()

    console.print("PostgreSQL: per-transfer service path …")
    per_tps, per_fail = run_per_transfer(url, customers, seconds, args.processes, args.threads)
    results.append(
        Result(
            f"ledger-service transfers, PostgreSQL ({args.processes}x{args.threads})",
            per_tps,
            "transfers/s",
            f"{per_fail} failed; one transaction each",
        )
    )
    pay_tps, pay_fail = run_per_transfer(
        url, customers, seconds, args.processes, args.threads, layer="payments"
    )
    results.append(
        Result(
            f"payment-service transfers, PostgreSQL ({args.processes}x{args.threads})",
            pay_tps,
            "transfers/s",
            f"{pay_fail} failed; whole payment order each",
        )
    )
    console.print("PostgreSQL: batched path …")
    batch_tps, refused = run_batched(url, customers, seconds, 2, args.batch)
    results.append(
        Result(
            f"batched transfers, PostgreSQL (2 shards x {args.batch})",
            batch_tps,
            "transfers/s",
            f"{refused} refused",
        )
    )

    db = Database(url)
    started = time.perf_counter()
    report = db.read(verify_ledger)
    verify_s = time.perf_counter() - started
    db.dispose()
    if not report.ok:
        raise SystemExit(f"ledger verify failed after the benchmark: {report.discrepancies[:3]}")
    results.append(Result(f"ledger verify of {report.entries:,} entries", verify_s, "s", "OK"))

    drop_pg("tongbao_bench")

    console.print("SQLite …")
    tmp = Path(tempfile.mkdtemp(prefix="tongbao-bench-"))
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    db = Database(sqlite_url)
    upgrade(db)
    db.dispose()
    platform = Platform(settings_for(sqlite_url)).start()
    sqlite_customers = populate(platform, 2_000, 50_000_000)
    platform.close()
    sq_tps, sq_fail = run_per_transfer(sqlite_url, sqlite_customers, seconds / 2, 1, 4)
    results.append(
        Result("ledger-service transfers, SQLite (1x4)", sq_tps, "transfers/s", f"{sq_fail} failed")
    )
    sq_pay, sq_pay_fail = run_per_transfer(
        sqlite_url, sqlite_customers, seconds / 2, 1, 4, layer="payments"
    )
    results.append(
        Result(
            "payment-service transfers, SQLite (1x4)",
            sq_pay,
            "transfers/s",
            f"{sq_pay_fail} failed",
        )
    )
    sq_batch, sq_refused = run_batched(sqlite_url, sqlite_customers, seconds / 2, 1, args.batch)
    results.append(
        Result(
            f"batched transfers, SQLite (1 x {args.batch})",
            sq_batch,
            "transfers/s",
            f"{sq_refused} refused",
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)

    results.append(
        Result(
            f"HTTP POST /v1/payments p50 at {args.rate:.0f}/s",
            p50,
            "ms",
            f"{args.http_workers} workers, {http_errors} errors",
        )
    )
    results.append(
        Result(f"HTTP POST /v1/payments p99 at {args.rate:.0f}/s", p99, "ms", "target < 50 ms")
    )

    table = Table(
        title=f"Tongbao benchmark ({'quick' if args.quick else 'full'}, {os.cpu_count()} CPUs)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("vs pgbench", justify="right")
    table.add_column("note")
    for r in results:
        ratio = f"{r.value / reference.value:.2f}x" if r.unit.endswith("/s") else ""
        table.add_row(r.name, f"{r.value:,.1f}", r.unit, ratio, r.note)
    Console(width=max(Console().width, 120)).print(table)
    print(
        f"RESULT per_transfer_vs_pgbench={per_tps / reference.value:.2f} "
        f"batched_vs_pgbench={batch_tps / reference.value:.2f} http_p99_ms={p99:.1f}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
