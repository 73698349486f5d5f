"""Registration's service functions against the real database, without a broker."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registration.companies import fallback_title
from services.registration.service import (
    enrich_company,
    register_batch,
    register_salons,
    request_missing_enrichment,
)
from shared.bus.errors import PermanentError
from shared.bus.topology import ENRICHMENT
from shared.db.models import Company, MarketplaceEvent, OutboxMessage
from shared.db.uow import UnitOfWork
from shared.messages import (
    CompanyEnriched,
    EnrichmentRequested,
    IntegrationStatusChanged,
    MarketplaceUser,
    RegistrationCompleted,
    RegistrationRequested,
)
from shared.yclients import CompanyProfile, YClientsNotFound, YClientsTransientError

_ids = itertools.count(910_000)


def new_salon_id() -> int:
    return next(_ids)


class FakeDirectory:
    """YClients' company endpoint at our own boundary: answers, or fails like YClients does."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.fail = fail
        self.calls: list[int] = []

    async def get_company(self, salon_id: int) -> CompanyProfile:
        self.calls.append(salon_id)
        if self.fail is not None:
            raise self.fail
        return CompanyProfile(
            id=salon_id,
            title=f"Бьюти-студия «Лотос» {salon_id}",
            phone="79001234567",
            timezone="Europe/Moscow",
            city="Москва",
            address="ул. Ленина, 1",
        )


def registration(*salon_ids: int, user: MarketplaceUser | None = None) -> RegistrationRequested:
    return RegistrationRequested(salon_id=salon_ids[0], data={"salon_ids": list(salon_ids), "user": user})


async def company(sm: async_sessionmaker[AsyncSession], salon_id: int) -> Company | None:
    async with sm() as s:
        return (await s.execute(select(Company).where(Company.yclients_id == salon_id))).scalar_one_or_none()


async def events(sm: async_sessionmaker[AsyncSession], salon_id: int, event_type: str) -> int:
    async with sm() as s:
        return int(
            (
                await s.execute(
                    select(func.count()).where(
                        MarketplaceEvent.salon_id == salon_id, MarketplaceEvent.event_type == event_type
                    )
                )
            ).scalar_one()
        )


async def test_new_salon_gets_company_event_and_follow_ups(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    user = MarketplaceUser(id="77", name="Андрей Иванов", phone="79990009900", email="a@example.com")
    uow = UnitOfWork(sessionmaker, producer="registration")

    applied = await register_salons(registration(salon, user=user), uow=uow)

    row = await company(sessionmaker, salon)
    assert applied == [salon]
    assert row is not None
    assert row.title == fallback_title(salon)
    assert row.integration_status == "pending_whatsapp"
    assert (row.marketplace_user_id, row.marketplace_user_name) == ("77", "Андрей Иванов")
    assert await events(sessionmaker, salon, "registration_started") == 1
    kinds = [type(m) for m in uow.take_committed()]
    # One follow-up: the enrichment queue subscribes to `registration.completed` itself.
    assert kinds == [RegistrationCompleted]
    assert RegistrationCompleted.ROUTING_KEY in ENRICHMENT.routing_keys


async def test_follow_ups_are_in_the_outbox_with_the_state(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    uow = UnitOfWork(sessionmaker, producer="registration")
    await register_salons(registration(salon), uow=uow)
    ids = [m.id for m in uow.take_committed()]
    async with sessionmaker() as s:
        stored = set((await s.execute(select(OutboxMessage.id).where(OutboxMessage.id.in_(ids)))).scalars())
    assert stored == set(ids)


async def test_redelivery_and_a_second_click_keep_one_company(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    cmd = registration(salon)
    assert await register_salons(cmd, uow=UnitOfWork(sessionmaker, producer="registration")) == [salon]
    # The same message again (redelivery): no effect at all.
    assert await register_salons(cmd, uow=UnitOfWork(sessionmaker, producer="registration")) == []
    # The admin clicks "Подключить" again: a new message, still one company.
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    async with sessionmaker() as s:
        count = (await s.execute(select(func.count()).where(Company.yclients_id == salon))).scalar_one()
    assert count == 1
    assert await events(sessionmaker, salon, "registration_started") == 2


async def test_multi_location_install_registers_every_salon(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    first, second = new_salon_id(), new_salon_id()
    uow = UnitOfWork(sessionmaker, producer="registration")
    await register_salons(registration(first, second), uow=uow)
    assert await company(sessionmaker, first) is not None
    assert await company(sessionmaker, second) is not None
    completed = [m for m in uow.take_committed() if isinstance(m, RegistrationCompleted)]
    assert sorted(m.data.salon_id for m in completed) == sorted([first, second])


async def test_multi_location_install_records_every_salon_in_the_audit_trail(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    first, second = new_salon_id(), new_salon_id()
    await register_salons(registration(first, second), uow=UnitOfWork(sessionmaker, producer="registration"))
    assert await events(sessionmaker, first, "registration_started") == 1
    assert await events(sessionmaker, second, "registration_started") == 1


async def test_a_batch_applies_each_install_once_in_order(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    a, b, c = new_salon_id(), new_salon_id(), new_salon_id()
    old_user = MarketplaceUser(id="1", name="Старый админ")
    new_user = MarketplaceUser(id="2", name="Новый админ")
    already = registration(c)
    await register_salons(already, uow=UnitOfWork(sessionmaker, producer="registration"))
    # a twice (two clicks, the later one wins), a multi-salon install, and a redelivery of an applied message.
    batch = [registration(a, user=old_user), registration(a, b), registration(a, user=new_user), already]
    uow = UnitOfWork(sessionmaker, producer="registration")

    applied = await register_batch(batch, uow=uow)

    assert applied == [a, a, b, a]
    row = await company(sessionmaker, a)
    assert row is not None and row.marketplace_user_name == "Новый админ"
    assert await events(sessionmaker, a, "registration_started") == 3
    assert await events(sessionmaker, b, "registration_started") == 1
    assert await events(sessionmaker, c, "registration_started") == 1
    completed = [m.data.salon_id for m in uow.take_committed() if isinstance(m, RegistrationCompleted)]
    assert completed == [a, a, b, a]


async def test_a_failing_batch_leaves_nothing_behind(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    good = new_salon_id()
    # bigint overflows: PostgreSQL refuses the whole statement, so the transaction must leave no trace.
    bad = RegistrationRequested(salon_id=good, data={"salon_ids": [2**63]})
    first = registration(good)
    with pytest.raises(Exception, match="range"):
        await register_batch([first, bad], uow=UnitOfWork(sessionmaker, producer="registration"))
    assert await company(sessionmaker, good) is None
    # Alone, the good message is applied: its claim was rolled back with the batch.
    assert await register_salons(first, uow=UnitOfWork(sessionmaker, producer="registration")) == [good]


async def test_reinstall_after_uninstall_starts_again_and_keeps_history(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    async with sessionmaker() as s:
        await s.execute(
            update(Company)
            .where(Company.yclients_id == salon)
            .values(integration_status="uninstalled", api_key_hash="ab" * 32, whatsapp_connected=True)
        )
        await s.commit()

    uow = UnitOfWork(sessionmaker, producer="registration")
    await register_salons(registration(salon), uow=uow)

    row = await company(sessionmaker, salon)
    assert row is not None
    assert row.integration_status == "pending_whatsapp"
    assert row.api_key_hash is None and row.whatsapp_connected is False
    assert await events(sessionmaker, salon, "registration_started") == 2
    changed = [m for m in uow.take_committed() if isinstance(m, IntegrationStatusChanged)]
    assert [(m.data.previous, m.data.status) for m in changed] == [("uninstalled", "pending_whatsapp")]


async def test_active_salon_clicking_again_stays_active(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    async with sessionmaker() as s:
        await s.execute(update(Company).where(Company.yclients_id == salon).values(integration_status="active"))
        await s.commit()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    row = await company(sessionmaker, salon)
    assert row is not None and row.integration_status == "active"


async def test_enrichment_stores_the_profile(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    uow = UnitOfWork(sessionmaker, producer="registration")
    directory = FakeDirectory()

    assert await enrich_company(
        EnrichmentRequested(salon_id=salon, data={"salon_id": salon}), uow=uow, yclients=directory
    )

    row = await company(sessionmaker, salon)
    assert row is not None
    assert row.title == f"Бьюти-студия «Лотос» {salon}"
    assert (row.phone, row.timezone) == ("79001234567", "Europe/Moscow")
    assert row.enriched_at is not None
    assert [type(m) for m in uow.take_committed()] == [CompanyEnriched]


async def test_the_registration_event_itself_drives_enrichment(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    registered = UnitOfWork(sessionmaker, producer="registration")
    await register_salons(registration(salon), uow=registered)
    [completed] = registered.take_committed()
    assert isinstance(completed, RegistrationCompleted)

    assert await enrich_company(
        completed, uow=UnitOfWork(sessionmaker, producer="registration"), yclients=FakeDirectory()
    )

    row = await company(sessionmaker, salon)
    assert row is not None and row.title == f"Бьюти-студия «Лотос» {salon}"
    assert await events(sessionmaker, salon, "company_enriched") == 1


async def test_enrichment_failure_keeps_fallback_title_and_propagates(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    down = FakeDirectory(fail=YClientsTransientError("unavailable", status=503))

    with pytest.raises(YClientsTransientError):
        await enrich_company(
            EnrichmentRequested(salon_id=salon, data={"salon_id": salon}),
            uow=UnitOfWork(sessionmaker, producer="registration"),
            yclients=down,
        )
    row = await company(sessionmaker, salon)
    assert row is not None and row.title == fallback_title(salon) and row.enriched_at is None


async def test_unknown_company_is_a_permanent_failure(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    missing = FakeDirectory(fail=YClientsNotFound("not found", status=404))
    with pytest.raises(PermanentError):
        await enrich_company(
            EnrichmentRequested(salon_id=salon, data={"salon_id": salon}),
            uow=UnitOfWork(sessionmaker, producer="registration"),
            yclients=missing,
        )


async def test_sweep_requests_profiles_still_missing(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    uow = UnitOfWork(sessionmaker, producer="registration")
    await request_missing_enrichment(uow, older_than_s=0)
    requested = {m.data.salon_id for m in uow.take_committed() if isinstance(m, EnrichmentRequested)}
    assert salon in requested


class OddDirectory(FakeDirectory):
    """YClients answering with a title longer than the column and a NUL byte in it."""

    async def get_company(self, salon_id: int) -> CompanyProfile:
        return CompanyProfile(id=salon_id, title="Салон\x00" + "Я" * 400, phone="7" * 80, timezone=None)


async def test_enrichment_fits_odd_values_into_the_columns(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon = new_salon_id()
    await register_salons(registration(salon), uow=UnitOfWork(sessionmaker, producer="registration"))
    await enrich_company(
        EnrichmentRequested(salon_id=salon, data={"salon_id": salon}),
        uow=UnitOfWork(sessionmaker, producer="registration"),
        yclients=OddDirectory(),
    )
    row = await company(sessionmaker, salon)
    assert row is not None
    assert row.title.startswith("СалонЯ") and len(row.title) == 255
    assert row.phone == "7" * 64
