"""Activation: the api_key and the partner callback (YCLIENTS.md §2), as plain functions testable without a broker.

The call to YClients happens outside any transaction; the company row is locked (`FOR UPDATE`) only while a
decision is taken and written, so an uninstall or freeze arriving meanwhile waits for a short transaction,
never for the network, and the activation's last step re-reads the status under the lock before it writes:
an activation that finishes after an uninstall does not resurrect the salon.

Ownership of an activation in flight: the message that moved the salon to `activating` (its
`activation_started` event). Its retries and redeliveries continue it; another message arriving meanwhile
(a duplicate `whatsapp.connected`, a click on "activate") is a no-op, unless the owner has shown no sign of
life for `STALE_AFTER`, when it takes over. Either way a retry asks YClients for the install status first,
so a 201 whose answer was lost never leads to a second callback or a second key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from services.activation.apikeys import hash_api_key, new_api_key
from services.activation.store import (
    activation_owner,
    has_unconfirmed_callback,
    latest_flag_change,
    lock_company,
    mark_activation_started,
    record_attempt,
)
from shared.bus.errors import PermanentError, TransientError
from shared.config import Settings
from shared.db.audit import record_event
from shared.db.models import Company
from shared.db.uow import UnitOfWork
from shared.messages import (
    ActivationCompleted,
    ActivationFailed,
    IntegrationStatusChanged,
    Message,
    RequestActivation,
    RequestPairing,
    WhatsAppConnected,
    WhatsAppLoggedOut,
    salon_id_from_session,
    session_id_for,
    utcnow,
)
from shared.yclients import InstallStatus, YClientsAlreadyInstalled, YClientsError

log = logging.getLogger(__name__)

CONSUMER = "activation"
DATA_WEBHOOK_PATH = "/webhook/yclients/data"
CHANNELS = ("whatsapp",)
# Platform statuses that mean our app is installed on the salon (`freezed` is installed, just unpaid).
PLATFORM_INSTALLED = ("active", "freezed")
# Longer than the longest retry delay (10 min), so a message waiting for its retry is never taken over.
STALE_AFTER = timedelta(minutes=15)
# Statuses an activation may start from; `activating` only for its owner (or a takeover).
STARTABLE = ("pending_whatsapp", "activation_failed", "activating")

ActivationCommand = WhatsAppConnected | RequestActivation
Outcome = Literal[
    "activated",
    "already_installed",
    "already_active",
    "in_progress",
    "not_connected",
    "not_activatable",
    "unfrozen",
    "superseded",
]


class InstallApi(Protocol):
    """The part of the YClients client activation needs."""

    async def activate(
        self, salon_id: int, api_key: str, webhook_urls: Sequence[str], channels: Sequence[str] = CHANNELS
    ) -> None:
        """Partner callback (201 or a typed error)."""
        ...

    async def get_install_status(self, salon_id: int) -> InstallStatus | None:
        """The install status, None when never installed."""
        ...


@dataclass(frozen=True)
class ActivationResult:
    """What one handling of an activation command did."""

    salon_id: int
    outcome: Outcome
    detail: str = ""


def salon_of(cmd: Message) -> int:
    """The salon an activation-related message is about."""
    if isinstance(cmd, RequestActivation):
        return cmd.data.salon_id
    if isinstance(cmd, WhatsAppConnected | WhatsAppLoggedOut):
        return salon_id_from_session(cmd.data.session_id)
    if cmd.salon_id is None:
        raise PermanentError(f"{cmd.type} carries no salon id")
    return cmd.salon_id


def webhook_urls(settings: Settings) -> list[str]:
    """The data-webhook URL registered in the callback."""
    return [settings.BASE_URL.rstrip("/") + DATA_WEBHOOK_PATH]


@dataclass
class _Run:
    """State of one handling, passed between its transactions."""

    cmd: ActivationCommand
    salon_id: int
    attempt: int
    company_id: int | None = None
    previous_hash: str | None = None
    previous_created_at: datetime | None = None

    async def record(
        self,
        session: AsyncSession,
        *,
        action: str,
        outcome: str,
        status_code: int | None,
        error: str | None = None,
    ) -> None:
        """One row in `activation_attempts` for a call this handling made."""
        await record_attempt(
            session,
            salon_id=self.salon_id,
            company_id=self.company_id,
            attempt=self.attempt,
            action=action,
            outcome=outcome,
            status_code=status_code,
            error=error,
            message_id=self.cmd.id,
        )


async def activate_salon(
    cmd: ActivationCommand,
    *,
    uow: UnitOfWork,
    yclients: InstallApi,
    settings: Settings,
    attempt: int = 1,
) -> ActivationResult:
    """Activate the salon on YClients (or record why not); raises PermanentError / transient errors to the consumer.

    On `whatsapp.connected` the salon's WhatsApp link is recorded first (this worker owns those columns).
    """
    run = _Run(cmd=cmd, salon_id=salon_of(cmd), attempt=attempt)
    api_key: str | None = None
    async with uow:
        company = await lock_company(uow.session, run.salon_id)
        if company is None:
            # Registration may still be on its way (the two workers run independently): retry later.
            raise TransientError(f"salon {run.salon_id} is not registered yet")
        run.company_id = company.id
        if isinstance(cmd, WhatsAppConnected):
            await _note_connected(uow, company, cmd)
        skip = await _reason_not_to_start(uow, company, cmd)
        if skip is not None:
            await uow.commit()
            if skip == "frozen":
                return await unfreeze_salon(run.salon_id, cause=cmd, attempt=attempt, uow=uow, yclients=yclients)
            log.info("activation not started", extra={"outcome": skip, "status": company.integration_status})
            return ActivationResult(run.salon_id, skip)
        check_first = (
            attempt > 1
            or company.integration_status == "activating"
            or await has_unconfirmed_callback(uow.session, run.salon_id)
        )
        await _start(uow, company, run)
        if not check_first:
            api_key = _store_new_key(company, run)
        await uow.commit()

    if api_key is None:
        installed = await _check_install(run, uow=uow, yclients=yclients)
        if installed:
            return await _finish_installed(run, uow=uow, key_hash=None, status_code=None)
        api_key = await _new_key_if_still_owner(run, uow=uow)
        if api_key is None:
            return ActivationResult(run.salon_id, "superseded", "another activation took over")

    try:
        await yclients.activate(run.salon_id, api_key, webhook_urls(settings), CHANNELS)
    except YClientsAlreadyInstalled as exc:
        return await _already_installed(run, exc, uow=uow, yclients=yclients)
    except YClientsError as exc:
        await _failed_call(run, exc, uow=uow, action="callback")
        raise
    return await _finish_installed(run, uow=uow, key_hash=hash_api_key(api_key), status_code=201)


async def _reason_not_to_start(
    uow: UnitOfWork, company: Company, cmd: ActivationCommand
) -> Outcome | Literal["frozen"] | None:
    status = company.integration_status
    if status == "active":
        return "already_active"
    if status == "frozen":
        # A frozen install comes back by payment, not by a new callback: only a manual request checks for it.
        return "frozen" if isinstance(cmd, RequestActivation) else "not_activatable"
    if status not in STARTABLE:
        return "not_activatable"
    if status == "activating":
        # An activation is in flight: its owner (a retry or redelivery) continues it, whatever the link does.
        owner = await activation_owner(uow.session, company.yclients_id)
        if owner is not None and owner.message_id != cmd.id and owner.last_seen > utcnow() - STALE_AFTER:
            return "in_progress"
        return None
    if not company.whatsapp_connected:
        # The app is a WhatsApp chat-bot: YClients must not route messages to a number that is not linked.
        await record_event(
            uow.session,
            salon_id=company.yclients_id,
            company_id=company.id,
            event_type="activation_skipped",
            data={"reason": "whatsapp_not_connected", "message_type": cmd.type},
            message_id=cmd.id,
        )
        return "not_connected"
    return None


async def _start(uow: UnitOfWork, company: Company, run: _Run) -> None:
    previous = company.integration_status
    if previous != "activating":
        company.integration_status = "activating"
        uow.emit(_status_changed(run, "activating", previous))
    company.last_error = None
    await mark_activation_started(
        uow.session,
        salon_id=run.salon_id,
        company_id=company.id,
        message_id=run.cmd.id,
        data={"trigger": run.cmd.type, "attempt": run.attempt, "previous_status": previous},
    )


def _store_new_key(company: Company, run: _Run) -> str:
    """Create the key and put its hash on the row; the plain value goes back to the caller's memory only."""
    api_key = new_api_key()
    run.previous_hash, run.previous_created_at = company.api_key_hash, company.api_key_created_at
    company.api_key_hash = hash_api_key(api_key)
    company.api_key_created_at = utcnow()
    return api_key


async def _new_key_if_still_owner(run: _Run, *, uow: UnitOfWork) -> str | None:
    async with uow:
        company = await lock_company(uow.session, run.salon_id)
        if company is None or company.integration_status != "activating":
            await uow.commit()
            return None
        owner = await activation_owner(uow.session, run.salon_id)
        if owner is not None and owner.message_id != run.cmd.id:
            return None
        api_key = _store_new_key(company, run)
        await uow.commit()
    return api_key


async def _check_install(run: _Run, *, uow: UnitOfWork, yclients: InstallApi) -> bool:
    """Ask YClients whether the app is installed; records the call. Raises on a failed call."""
    try:
        status = await yclients.get_install_status(run.salon_id)
    except YClientsError as exc:
        await _failed_call(run, exc, uow=uow, action="status_check")
        raise
    installed = status is not None and status.status in PLATFORM_INSTALLED
    async with uow:
        await run.record(
            uow.session,
            action="status_check",
            outcome="installed" if installed else "not_installed",
            status_code=200 if status is not None else 404,
            error=None if installed else f"platform status: {status.status if status else 'not installed'}",
        )
        await uow.commit()
    return installed


async def _already_installed(
    run: _Run, exc: YClientsAlreadyInstalled, *, uow: UnitOfWork, yclients: InstallApi
) -> ActivationResult:
    """403 "already installed": success once the status endpoint confirms it (YCLIENTS.md §2)."""
    async with uow:
        company = await lock_company(uow.session, run.salon_id)
        if company is not None and company.integration_status == "activating":
            # The key just offered was refused: YClients keeps the one of that install (ours from before, if any).
            company.api_key_hash, company.api_key_created_at = run.previous_hash, run.previous_created_at
        await run.record(
            uow.session,
            action="callback",
            outcome="rejected_installed",
            status_code=exc.status,
            error=str(exc),
        )
        await uow.commit()
    if await _check_install(run, uow=uow, yclients=yclients):
        return await _finish_installed(run, uow=uow, key_hash=None, status_code=None)
    raise TransientError("YClients answered 'already installed' but its status endpoint does not confirm it")


async def _finish_installed(
    run: _Run, *, uow: UnitOfWork, key_hash: str | None, status_code: int | None
) -> ActivationResult:
    """The app is installed on the salon: `active`, unless an uninstall or re-install overtook this activation."""
    already = key_hash is None
    async with uow:
        company = await lock_company(uow.session, run.salon_id)
        if status_code is not None:
            await run.record(
                uow.session,
                action="callback",
                outcome="installed",
                status_code=status_code,
            )
        if company is None or company.integration_status in ("uninstalled", "pending_whatsapp"):
            await uow.commit()
            log.warning("activation finished after an uninstall; not applied")
            return ActivationResult(run.salon_id, "superseded", "uninstalled meanwhile")
        if key_hash is not None:
            # The key YClients now holds is the one of the callback it accepted last.
            company.api_key_hash = key_hash
        previous = company.integration_status
        if previous not in ("activating", "activation_failed"):
            # Frozen meanwhile, or completed by another message: the install is recorded, the status stays.
            await uow.commit()
            return ActivationResult(run.salon_id, "already_active", f"status {previous}")
        now = utcnow()
        company.integration_status = "active"
        company.activated_at = now
        company.last_error = None
        await record_event(
            uow.session,
            salon_id=run.salon_id,
            company_id=company.id,
            event_type="activation_completed",
            data={"already_installed": already, "trigger": run.cmd.type},
            message_id=run.cmd.id,
        )
        follow = run.cmd.follow_up() | {"salon_id": run.salon_id}
        uow.emit(
            ActivationCompleted(
                **follow, data={"salon_id": run.salon_id, "activated_at": now, "already_installed": already}
            )
        )
        uow.emit(_status_changed(run, "active", previous))
        await uow.commit()
    log.info("salon activated", extra={"already_installed": already})
    return ActivationResult(run.salon_id, "already_installed" if already else "activated")


async def _failed_call(run: _Run, exc: YClientsError, *, uow: UnitOfWork, action: str) -> None:
    """Record a failed call; a permanent one fails the activation now (and raises PermanentError)."""
    reason = str(exc)
    permanent = not exc.retryable
    async with uow:
        company = await lock_company(uow.session, run.salon_id)
        await run.record(
            uow.session,
            action=action,
            outcome="permanent_error" if permanent else "transient_error",
            status_code=exc.status,
            error=reason,
        )
        if company is not None and company.integration_status == "activating":
            company.last_error = f"{action}: {reason}"
            if permanent:
                if action == "callback":
                    # The key offered was refused, so it authenticates nothing: back to what it was.
                    company.api_key_hash, company.api_key_created_at = run.previous_hash, run.previous_created_at
                await _mark_failed(uow, company, run.cmd, reason=reason, status_code=exc.status, permanent=True)
        await uow.commit()
    if permanent:
        log.warning("activation failed permanently", extra={"error": reason, "status_code": exc.status})
        raise PermanentError(f"YClients {action} refused: {reason}") from None
    log.info("activation call failed, will retry", extra={"error": reason, "status_code": exc.status})


async def _mark_failed(
    uow: UnitOfWork, company: Company, cmd: Message, *, reason: str, status_code: int | None, permanent: bool
) -> None:
    previous = company.integration_status
    company.integration_status = "activation_failed"
    company.last_error = reason
    await record_event(
        uow.session,
        salon_id=company.yclients_id,
        company_id=company.id,
        event_type="activation_failed",
        data={"reason": reason, "status_code": status_code, "permanent": permanent},
        message_id=cmd.id,
    )
    follow = cmd.follow_up() | {"salon_id": company.yclients_id}
    uow.emit(
        ActivationFailed(
            **follow,
            data={
                "salon_id": company.yclients_id,
                "reason": reason,
                "status_code": status_code,
                "permanent": permanent,
            },
        )
    )
    uow.emit(
        IntegrationStatusChanged(
            **follow, data={"salon_id": company.yclients_id, "status": "activation_failed", "previous": previous}
        )
    )


async def give_up(msg: Message, reason: str, *, uow: UnitOfWork) -> bool:
    """The consumer gave up on an activation message: the salon it owned is `activation_failed` (True if moved).

    A permanent failure was already recorded by `activate_salon` (the state guard makes this a no-op then).
    """
    if not isinstance(msg, WhatsAppConnected | RequestActivation):
        return False
    salon_id = salon_of(msg)
    async with uow:
        company = await lock_company(uow.session, salon_id)
        if company is None or company.integration_status != "activating":
            return False
        owner = await activation_owner(uow.session, salon_id)
        if owner is not None and owner.message_id != msg.id:
            return False
        await _mark_failed(
            uow,
            company,
            msg,
            reason=company.last_error or reason,
            status_code=None,
            permanent=reason.startswith("permanent"),
        )
        await uow.commit()
    return True


async def unfreeze_salon(
    salon_id: int, *, cause: Message, attempt: int, uow: UnitOfWork, yclients: InstallApi
) -> ActivationResult:
    """Ask YClients for the install status; `frozen` → `active` when it says `active` (YCLIENTS.md §1 payment)."""
    try:
        status = await yclients.get_install_status(salon_id)
    except YClientsError as exc:
        async with uow:
            await record_attempt(
                uow.session,
                salon_id=salon_id,
                company_id=None,
                attempt=attempt,
                action="status_check",
                outcome="transient_error" if exc.retryable else "permanent_error",
                status_code=exc.status,
                error=str(exc),
                message_id=cause.id,
            )
            await uow.commit()
        raise
    active = status is not None and status.status == "active"
    async with uow:
        company = await lock_company(uow.session, salon_id)
        await record_attempt(
            uow.session,
            salon_id=salon_id,
            company_id=company.id if company else None,
            attempt=attempt,
            action="status_check",
            outcome="installed" if active else "not_installed",
            status_code=200 if status is not None else 404,
            error=None if active else f"platform status: {status.status if status else 'not installed'}",
            message_id=cause.id,
        )
        if company is None or company.integration_status != "frozen" or not active:
            await uow.commit()
            return ActivationResult(salon_id, "not_activatable", "still frozen on YClients")
        company.integration_status = "active"
        await record_event(
            uow.session,
            salon_id=salon_id,
            company_id=company.id,
            event_type="unfrozen",
            data={"cause": cause.type},
            message_id=cause.id,
        )
        uow.emit(
            IntegrationStatusChanged(
                **(cause.follow_up() | {"salon_id": salon_id}),
                data={"salon_id": salon_id, "status": "active", "previous": "frozen"},
            )
        )
        # Freeze paused the session and kept its credentials: a pairing request resumes it without a new scan.
        uow.emit(
            RequestPairing(
                **(cause.follow_up() | {"salon_id": salon_id}),
                data={"session_id": session_id_for(salon_id), "mode": "qr"},
            )
        )
        await uow.commit()
    return ActivationResult(salon_id, "unfrozen")


# ---- the salon's WhatsApp link (this worker owns `whatsapp_connected` / `whatsapp_phone`) ------------------


async def _note_connected(uow: UnitOfWork, company: Company, cmd: WhatsAppConnected) -> None:
    if company.integration_status == "uninstalled":
        return
    if await _is_stale_flag(uow, company, cmd.occurred_at):
        return
    company.whatsapp_connected = True
    if cmd.data.phone:
        company.whatsapp_phone = cmd.data.phone
    await record_event(
        uow.session,
        salon_id=company.yclients_id,
        company_id=company.id,
        event_type="whatsapp_connected",
        data={"phone": cmd.data.phone, "occurred_at": cmd.occurred_at.isoformat()},
        message_id=cmd.id,
    )


async def note_logged_out(msg: WhatsAppLoggedOut, *, uow: UnitOfWork) -> bool:
    """The salon's WhatsApp session is gone for good: `whatsapp_connected = false` (True if it changed)."""
    salon_id = salon_of(msg)
    async with uow:
        company = await lock_company(uow.session, salon_id)
        if company is None or await _is_stale_flag(uow, company, msg.occurred_at):
            return False
        changed = company.whatsapp_connected
        company.whatsapp_connected = False
        await record_event(
            uow.session,
            salon_id=salon_id,
            company_id=company.id,
            event_type="whatsapp_logged_out",
            data={"code": msg.data.code, "reason": msg.data.reason, "occurred_at": msg.occurred_at.isoformat()},
            message_id=msg.id,
        )
        await uow.commit()
    return changed


async def _is_stale_flag(uow: UnitOfWork, company: Company, occurred_at: datetime) -> bool:
    """True when a newer connect/logout was already applied (events can arrive out of order)."""
    newest = await latest_flag_change(uow.session, company.yclients_id)
    return newest is not None and newest > occurred_at


def _status_changed(run: _Run, status: str, previous: str | None) -> IntegrationStatusChanged:
    return IntegrationStatusChanged(
        **(run.cmd.follow_up() | {"salon_id": run.salon_id}),
        data={"salon_id": run.salon_id, "status": status, "previous": previous},
    )
