"""`python -m chaos` (= `make chaos`): run the scenarios, print the table, write docs/chaos.md.

python -m chaos                         # R1–R6, proxy variants, writes docs/chaos.md
python -m chaos -s R2 -s R5 --short     # some scenarios, short form, document not written
python -m chaos --real-broker-stop      # R2 with `rabbitmqctl stop_app` (affects everyone on the machine)
python -m chaos --real-db-restart       # R3 with `pg_ctlcluster stop/start` (affects everyone on the machine)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
import time
from pathlib import Path

import asyncpg

from chaos.report import machine, render_doc, text_table
from chaos.scenarios import SCENARIOS, Options
from chaos.suite import now, run_label, run_suite
from tests.support.infra import PG_ADMIN
from tests.support.processes import ROOT

DEFAULT_DOC = ROOT / "docs" / "chaos.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-s", "--scenario", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)"
    )
    parser.add_argument("--short", action="store_true", help="the short form (the one `make test` runs)")
    parser.add_argument(
        "--real-broker-stop",
        action="store_true",
        help="R2 stops the real RabbitMQ application (rabbitmqctl stop_app/start_app): everyone on this machine",
    )
    parser.add_argument(
        "--real-db-restart",
        action="store_true",
        help="R3 stops and starts the real PostgreSQL cluster (pg_ctlcluster): everyone on this machine",
    )
    parser.add_argument("--seed", type=int, default=5, help="seed of the load's random choices")
    parser.add_argument("--doc", type=Path, default=None, help=f"where to write the document (default {DEFAULT_DOC})")
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    return parser.parse_args(argv)


async def _postgres_version() -> str:
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    except (OSError, asyncpg.PostgresError):
        return "PostgreSQL (version unknown)"
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    """Run, print, write; exit 1 when any row is not ok."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("chaos").setLevel(logging.INFO)
    # The tap's consumer is cancelled when its vhost is deleted at the end of a world: expected, not news.
    logging.getLogger("aiormq").setLevel(logging.ERROR)
    keys = args.scenario or list(SCENARIOS)
    options = Options(
        short=args.short, real_broker_stop=args.real_broker_stop, real_db_restart=args.real_db_restart, seed=args.seed
    )
    started_at = now()
    started = time.monotonic()
    results = asyncio.run(run_suite(keys, options, shared_world=False, label=run_label(started_at)))
    seconds = time.monotonic() - started
    print(text_table([r.row for r in results]))
    for result in results:
        print(f"\n{result.key} — {result.title}")
        for note in result.notes:
            print(f"  - {note}")
    partial = args.scenario is not None or args.short
    doc = args.doc or (None if args.no_doc or partial else DEFAULT_DOC)
    if doc is not None and not args.no_doc:
        command = "make chaos" + (
            f" ARGS={shlex.quote(' '.join(argv or sys.argv[1:]))}" if (argv or sys.argv[1:]) else ""
        )
        variants = [
            "Broker outage (R2): " + ("real `rabbitmqctl stop_app`" if args.real_broker_stop else "TCP proxy"),
            "Database restart (R3): " + ("real `pg_ctlcluster stop/start`" if args.real_db_restart else "TCP proxy"),
            f"Load seed: {args.seed}{' (short form)' if args.short else ''}",
        ]
        text = render_doc(
            results,
            machine_info=machine(asyncio.run(_postgres_version())),
            started=started_at,
            seconds=seconds,
            command=command,
            variants=variants,
        )
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(text, encoding="utf-8")
        print(f"\nwritten: {doc}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
