"""``python -m sandbox.yclients``: serve the sandbox on ``BIND_HOST:SANDBOX_PORT`` (127.0.0.1:8090)."""

from __future__ import annotations

import logging

import uvicorn

from sandbox.yclients.app import create_app
from shared.config import get_settings


def main() -> None:
    """Run the sandbox with uvicorn."""
    settings = get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    logging.getLogger("sandbox.yclients").info(
        "YClients sandbox: marketplace page at http://%s:%s/marketplace", settings.BIND_HOST, settings.SANDBOX_PORT
    )
    uvicorn.run(app, host=settings.BIND_HOST, port=settings.SANDBOX_PORT, log_level=settings.LOG_LEVEL.lower())


if __name__ == "__main__":
    main()
