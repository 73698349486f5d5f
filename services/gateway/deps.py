"""Gateway dependencies as `Annotated` aliases; the objects behind them are created in the lifespan.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
dependency per request (a third of the gateway's CPU under load in `make bench`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.livehub import LiveHub
from services.gateway.options import GatewayOptions
from shared.bus.broker import Broker
from shared.config import Settings


async def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_broker(request: Request) -> Broker:
    """The app's broker connection."""
    broker: Broker = request.app.state.broker
    return broker


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """The app's session factory."""
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read session for one request."""
    async with (await get_sessionmaker(request))() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BrokerDep = Annotated[Broker, Depends(get_broker)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]


async def get_hub(request: Request) -> LiveHub:
    """This instance's live-update hub."""
    hub: LiveHub = request.app.state.hub
    return hub


async def get_options(request: Request) -> GatewayOptions:
    """The gateway's timings and limits."""
    options: GatewayOptions = request.app.state.options
    return options


HubDep = Annotated[LiveHub, Depends(get_hub)]
OptionsDep = Annotated[GatewayOptions, Depends(get_options)]
