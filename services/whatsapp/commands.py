"""Commands from the ``whatsapp`` queue: recorded by whichever worker receives them, applied by the owner.

Any worker may receive ``whatsapp.pairing_requested`` / ``pause_requested`` / ``logout_requested``. In one
transaction it records the desired state on the session row (``desired``, the pairing mode and phone,
``command_seq + 1``), takes the lease if nobody holds it, or else ``pg_notify('whatsapp_sessions', id)``.
After the commit:
- if this worker is now the owner, its pool applies the command at once;
- otherwise the owner's listener wakes its runner, which applies it (and if the owner dies first, the next
  owner finds ``command_seq > applied_seq`` and applies it — the command is never lost).
A redelivered message is recognised by its id (``processed_messages``) and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from services.whatsapp.emulator.protocol import normalize_phone
from shared.bus.errors import PermanentError
from shared.db.models import WhatsAppSession as WS
from shared.db.uow import UnitOfWork
from shared.messages import RequestLogout, RequestPairing, RequestPause, salon_id_from_session

log = logging.getLogger(__name__)
CONSUMER = "whatsapp"
NOTIFY_CHANNEL = "whatsapp_sessions"
SessionCommand = RequestPairing | RequestPause | RequestLogout


@dataclass(frozen=True)
class CommandOutcome:
    """What recording a command did: whether it was new, and who owns the session now."""

    session_id: str
    recorded: bool
    owner: str | None = None


def _validate(cmd: SessionCommand) -> tuple[int, str | None]:
    session_id = cmd.data.session_id
    try:
        salon_id = salon_id_from_session(session_id)
    except ValueError as exc:
        raise PermanentError(f"bad session id {session_id!r}") from exc
    if cmd.salon_id is not None and cmd.salon_id != salon_id:
        raise PermanentError(f"session {session_id} does not belong to salon {cmd.salon_id}")
    phone: str | None = None
    if isinstance(cmd, RequestPairing) and cmd.data.mode == "phone":
        phone = normalize_phone(cmd.data.phone or "")
        if phone is None:
            raise PermanentError("pairing by phone needs a phone number: digits with the country code")
    return salon_id, phone


async def record_command(cmd: SessionCommand, *, uow: UnitOfWork, worker_id: str, lease_s: float) -> CommandOutcome:
    """Record the command on the session row (taking a free lease) and wake the owner."""
    salon_id, phone = _validate(cmd)
    session_id = cmd.data.session_id
    async with uow:
        db = uow.session
        if not await uow.claim_message(CONSUMER, cmd.id):
            log.info("command already recorded", extra={"session_id": session_id})
            return CommandOutcome(session_id, recorded=False)
        free = or_(WS.owner.is_(None), WS.lease_expires_at < func.now(), WS.owner == worker_id)
        lease = func.now() + timedelta(seconds=lease_s)
        take = {
            "owner": case((free, worker_id), else_=WS.owner),
            "lease_expires_at": case((free, lease), else_=WS.lease_expires_at),
        }
        if isinstance(cmd, RequestPairing):
            stmt = insert(WS).values(
                session_id=session_id,
                salon_id=salon_id,
                state="new",
                desired="running",
                failures=0,
                command_seq=1,
                applied_seq=0,
                pairing_mode=cmd.data.mode,
                pairing_phone=phone,
                correlation_id=cmd.correlation_id,
                owner=worker_id,
                lease_expires_at=lease,
            )
            owner = (
                await db.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[WS.session_id],
                        set_={
                            "desired": "running",
                            "command_seq": WS.command_seq + 1,
                            "pairing_mode": cmd.data.mode,
                            "pairing_phone": phone,
                            "correlation_id": cmd.correlation_id,
                            **take,
                        },
                    ).returning(WS.owner)
                )
            ).scalar_one()
        else:
            desired = "paused" if isinstance(cmd, RequestPause) else "logged_out"
            owner = (
                await db.execute(
                    update(WS)
                    .where(WS.session_id == session_id)
                    .values(
                        desired=desired,
                        command_seq=WS.command_seq + 1,
                        correlation_id=cmd.correlation_id,
                        **take,
                    )
                    .returning(WS.owner)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one_or_none()
            if owner is None:
                # No session was ever started for this salon: nothing to pause or log out.
                await uow.commit()
                log.info("no whatsapp session to %s", desired, extra={"session_id": session_id})
                return CommandOutcome(session_id, recorded=False)
        if owner != worker_id:
            # Another worker holds the session: wake it (this worker applies its own at once, no need).
            await db.execute(select(func.pg_notify(NOTIFY_CHANNEL, session_id)))
        await uow.commit()
    log.info("command recorded", extra={"session_id": session_id, "type": cmd.type, "owner": owner})
    return CommandOutcome(session_id, recorded=True, owner=owner)
