"""Registration's service functions: plain async functions, testable without a broker."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from services.registration.companies import (
    UpsertResult,
    apply_profile,
    companies_missing_profile,
    fallback_title,
    fit,
    upsert_companies,
)
from shared.bus.errors import PermanentError
from shared.db.audit import AuditEvent, record_event, record_events
from shared.db.uow import UnitOfWork
from shared.messages import (
    CompanyEnriched,
    EnrichmentRequested,
    IntegrationStatusChanged,
    RegistrationCompleted,
    RegistrationRequested,
)
from shared.yclients import CompanyProfile, YClientsNotFound

log = logging.getLogger(__name__)
CONSUMER = "registration"


class CompanyDirectory(Protocol):
    """The part of the YClients client enrichment needs."""

    async def get_company(self, salon_id: int) -> CompanyProfile:
        """The branch profile from YClients."""
        ...


async def register_salons(cmd: RegistrationRequested, *, uow: UnitOfWork) -> list[int]:
    """Upsert every salon of an install, record `registration_started`, announce `registration.completed`.

    The enrichment queue subscribes to `registration.completed`: the profile is fetched after every registration.

    Returns the salon ids applied now (empty on a redelivery of a message already applied).
    """
    return await register_batch([cmd], uow=uow)


async def register_batch(cmds: Sequence[RegistrationRequested], *, uow: UnitOfWork) -> list[int]:
    """`register_salons` for several installs in one transaction; returns the salon ids applied now.

    Set-based statements (claim, lock, upsert, audit rows, outbox) instead of a round trip per row. A salon
    that appears in several installs of the batch is applied once per install, in order.
    """
    async with uow:
        fresh = await uow.claim_messages(CONSUMER, [cmd.id for cmd in cmds])
        if len(fresh) < len(cmds):
            log.info("registration already applied", extra={"skipped": len(cmds) - len(fresh)})
        applied: list[int] = []
        for group in _without_repeats([cmd for cmd in cmds if cmd.id in fresh]):
            installs = [(salon_id, cmd.data.user) for cmd in group for salon_id in cmd.data.salon_ids]
            results = await upsert_companies(uow.session, installs)
            audit: list[AuditEvent] = []
            for cmd in group:
                for salon_id in cmd.data.salon_ids:
                    audit.append(_registered(cmd, salon_id, results[salon_id], uow))
                    applied.append(salon_id)
            await record_events(uow.session, audit)
        await uow.commit()
        if applied:
            log.info("salons registered", extra={"salon_ids": applied, "installs": len(fresh)})
        return applied


def _without_repeats(cmds: Sequence[RegistrationRequested]) -> list[list[RegistrationRequested]]:
    """Consecutive groups in which no salon id appears twice (one upsert statement per group)."""
    groups: list[list[RegistrationRequested]] = []
    seen: set[int] = set()
    for cmd in cmds:
        ids = set(cmd.data.salon_ids)
        if not groups or seen & ids or len(ids) < len(cmd.data.salon_ids):
            groups.append([])
            seen = set()
        groups[-1].append(cmd)
        seen |= ids
    return groups


def _registered(cmd: RegistrationRequested, salon_id: int, result: UpsertResult, uow: UnitOfWork) -> AuditEvent:
    """Emit the follow-ups of one registered salon; returns its audit row."""
    user = cmd.data.user
    follow = {"correlation_id": cmd.correlation_id, "salon_id": salon_id}
    if result.reinstalled:
        uow.emit(
            IntegrationStatusChanged(
                **follow, data={"salon_id": salon_id, "status": result.status, "previous": "uninstalled"}
            )
        )
    uow.emit(
        RegistrationCompleted(
            **follow,
            data={
                "salon_id": salon_id,
                "company_id": result.company_id,
                "title": result.title,
                "integration_status": result.status,
                "enriched": result.enriched,
            },
        )
    )
    return AuditEvent(
        salon_id=salon_id,
        company_id=result.company_id,
        event_type="registration_started",
        data={"salon_ids": cmd.data.salon_ids, "user_id": user.id if user else None, "reinstall": result.reinstalled},
        message_id=cmd.id,
    )


async def enrich_company(
    cmd: EnrichmentRequested | RegistrationCompleted, *, uow: UnitOfWork, yclients: CompanyDirectory
) -> bool:
    """Fetch the salon's profile from YClients and store it; True when the company was updated.

    Runs for every registration (a new click refreshes the profile) and whenever enrichment is asked again.

    A YClients failure propagates as a transient error (retried later); the company keeps its fallback title.
    """
    salon_id = cmd.data.salon_id
    try:
        profile = await yclients.get_company(salon_id)
    except YClientsNotFound as exc:
        raise PermanentError(f"YClients has no company {salon_id}") from exc
    title = fit(profile.title, 255) or fallback_title(salon_id)
    phone, timezone = fit(profile.phone, 64), fit(profile.timezone, 64)
    async with uow:
        company_id = await apply_profile(uow.session, salon_id, title=title, phone=phone, timezone=timezone)
        if company_id is None:
            raise PermanentError(f"company {salon_id} is not registered")
        await record_event(
            uow.session,
            salon_id=salon_id,
            company_id=company_id,
            event_type="company_enriched",
            data={"title": title, "timezone": timezone},
            message_id=cmd.id,
        )
        uow.emit(
            CompanyEnriched(
                correlation_id=cmd.correlation_id,
                salon_id=salon_id,
                data={"salon_id": salon_id, "title": title, "phone": phone, "timezone": timezone},
            )
        )
        await uow.commit()
    return True


async def request_missing_enrichment(uow: UnitOfWork, *, older_than_s: int, limit: int = 500) -> int:
    """Ask again for profiles still missing long after registration (their retries were exhausted)."""
    async with uow:
        salon_ids = await companies_missing_profile(uow.session, older_than_s=older_than_s, limit=limit)
        for salon_id in salon_ids:
            uow.emit(EnrichmentRequested(salon_id=salon_id, data={"salon_id": salon_id}))
        await uow.commit()
    return len(salon_ids)
