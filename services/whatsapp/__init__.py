"""The WhatsApp session worker: pairing (QR / code), connections, reconnects, pause, logout; one owner per session."""
