"""QR codes as inline SVG, rendered server-side from the payload WhatsApp issued."""

from __future__ import annotations

import io
import logging
from functools import lru_cache

import segno

log = logging.getLogger(__name__)


@lru_cache(maxsize=256)
def qr_svg(payload: str) -> str | None:
    """An SVG (with its namespace, so the page can parse it as a document) for a QR payload; None if unencodable."""
    try:
        # Level L like WhatsApp Web: the payload is long, and lower correction keeps the modules large.
        qr = segno.make_qr(payload, error="l", boost_error=False)
    except (segno.DataOverflowError, ValueError) as exc:
        log.warning("QR payload cannot be encoded", extra={"error": repr(exc), "payload_len": len(payload)})
        return None
    out = io.BytesIO()
    qr.save(
        out,
        kind="svg",
        xmldecl=False,
        nl=False,
        scale=1,
        border=3,
        dark="#111111",
        light="#ffffff",
        omitsize=True,
        svgns=True,
        svgclass="qr-svg",
        lineclass=None,
        title="QR-код для WhatsApp",
    )
    return out.getvalue().decode("utf-8")
