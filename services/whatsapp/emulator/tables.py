"""The emulated WhatsApp server's own tables, in their own schema (not our domain model).

They live in the ``whatsapp_emulator`` schema so that they are clearly not part of the product's data and
alembic's autogenerate (which compares the default schema only) never proposes to drop them. The migration
``0002_whatsapp`` creates them; ``0004_emulator_confirm`` adds ``pairings.confirmed_at``.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text

SCHEMA = "whatsapp_emulator"
metadata = MetaData(schema=SCHEMA)

# One pairing attempt per session: the client's public keys, the ref/code the server considers valid now,
# the outcome once a phone accepted it (``paired_at``), and ``confirmed_at`` once the client stored its
# credentials and confirmed: only then is the device linked (a ``devices`` row) and the phone told so.
pairings = Table(
    "pairings",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("attempt_id", String(64), nullable=False),
    Column("identity_pub", Text, nullable=False),
    Column("qr_payload", Text),
    Column("qr_expires_at", DateTime(timezone=True)),
    Column("code", String(16)),
    Column("code_phone", String(32)),
    Column("code_expires_at", DateTime(timezone=True)),
    Column("paired_at", DateTime(timezone=True)),
    Column("paired_phone", String(32)),
    Column("device_id", Integer),
    Column("confirmed_at", DateTime(timezone=True)),
)

# Linked devices ("Linked devices" on the phone) and the one connection the server keeps per device.
devices = Table(
    "devices",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("identity_pub", Text, nullable=False),
    Column("phone", String(32), nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("linked_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("connection_owner", String(128)),
    Column("connection_seq", BigInteger, nullable=False, default=0),
    Column("connections", BigInteger, nullable=False, default=0),
    Column("connected_at", DateTime(timezone=True)),
    Column("pending_drop", Integer),
)
