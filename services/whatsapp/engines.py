"""Building the engine ``WHATSAPP_ENGINE`` selects (neonize is imported only when selected)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.auth_store import AuthStore
from services.whatsapp.emulator.engine import EmulatorEngine, EmulatorTimings
from services.whatsapp.emulator.server import EmulatorServer, PostgresEmulatorServer
from services.whatsapp.engine import AbstractWhatsAppEngine
from services.whatsapp.settings import WhatsAppSettings


@dataclass(frozen=True)
class BuiltEngine:
    """The engine, and the emulated server when the engine is the emulator."""

    engine: AbstractWhatsAppEngine
    server: EmulatorServer | None = None


def emulator_timings(wa: WhatsAppSettings) -> EmulatorTimings:
    """The emulator's timings from settings."""
    return EmulatorTimings(
        qr_first_s=wa.EMULATOR_QR_FIRST_S,
        qr_next_s=wa.EMULATOR_QR_NEXT_S,
        qr_refs=wa.EMULATOR_QR_REFS,
        code_ttl_s=wa.emulator_code_ttl_s,
    )


def build_engine(
    kind: str,
    *,
    wa: WhatsAppSettings,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    auth: AuthStore,
    worker_id: str,
    io_slots: asyncio.Semaphore | None = None,
) -> BuiltEngine:
    """The engine for ``kind`` (``emulator`` or ``neonize``)."""
    if kind == "emulator":
        server = PostgresEmulatorServer(sessionmaker, slots=io_slots, confirm_s=wa.EMULATOR_CONFIRM_S)
        return BuiltEngine(EmulatorEngine(server, auth, emulator_timings(wa), owner=worker_id), server)
    if kind == "neonize":
        # Fail at start-up, clearly, when the optional dependency is missing.
        import neonize  # noqa: F401

        from services.whatsapp.neonize_engine import NeonizeEngine, neonize_client_factory, store_url_for

        # asyncio.to_thread's default pool has ~cpu+4 threads: with neonize holding one per client, the next
        # clients (and every stop/logout) would wait for ever. Room for every client plus short calls.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=wa.NEONIZE_MAX_CLIENTS + 32, thread_name_prefix="neonize")
        )
        own_store = wa.NEONIZE_DATABASE_URL is None
        store_url = wa.NEONIZE_DATABASE_URL or store_url_for(database_url)
        return BuiltEngine(
            NeonizeEngine(
                auth,
                store_url=store_url,
                store_in_our_database=own_store,
                client_factory=neonize_client_factory,
            )
        )
    raise ValueError(f"unknown WHATSAPP_ENGINE {kind!r}")
