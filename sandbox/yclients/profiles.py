"""Salon profiles: a few seeded branches with Cyrillic titles, a generated one for any other id."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MAX_COMPANY_ID = 2**53


@dataclass(frozen=True)
class Salon:
    """A branch as ``GET /api/v1/company/{id}/`` returns it."""

    id: int
    title: str
    phone: str
    timezone_name: str
    city: str
    address: str
    country: str = "Россия"

    def as_json(self) -> dict[str, Any]:
        """The ``data`` of the company endpoint."""
        return asdict(self)


SEEDED: dict[int, Salon] = {
    s.id: s
    for s in (
        Salon(962302, "Салон красоты «Ромашка»", "+79006464263", "Europe/Moscow", "Москва", "ул. Ленина, 1"),
        Salon(
            100101,
            "Барбершоп «Борода и ножницы»",
            "+78121234567",
            "Europe/Moscow",
            "Санкт-Петербург",
            "Невский пр., 28",
        ),
        Salon(100102, "Студия маникюра «Лак»", "+78432223344", "Europe/Moscow", "Казань", "ул. Баумана, 44"),
        Salon(100103, "СПА «Ёлка»", "+73432001122", "Asia/Yekaterinburg", "Екатеринбург", "ул. Малышева, 5"),
        Salon(200201, "«Лепесток» на Тверской", "+74951112233", "Europe/Moscow", "Москва", "ул. Тверская, 12"),
        Salon(200202, "«Лепесток» на Арбате", "+74951112234", "Europe/Moscow", "Москва", "ул. Арбат, 30"),
    )
}
# The multi-location example of the marketplace page: one network, two branches.
NETWORK_TITLE = "Сеть салонов «Лепесток»"
NETWORK_IDS = (200201, 200202)


def salon(salon_id: int) -> Salon | None:
    """The profile of any positive id (seeded or generated); None for an impossible id."""
    if not 0 < salon_id <= MAX_COMPANY_ID:
        return None
    seeded = SEEDED.get(salon_id)
    if seeded is not None:
        return seeded
    return Salon(
        id=salon_id,
        title=f"Студия красоты №{salon_id}",
        phone=f"+7900{salon_id % 10_000_000:07d}",
        timezone_name="Europe/Moscow",
        city="Москва",
        address=f"ул. Примерная, д. {salon_id % 200 + 1}",
    )
