"""The WhatsApp session worker (``python -m services.whatsapp``): pairing, connections, reconnects, pause, logout.

Map of the package:
- ``engine.py`` — the engine interface and its events; ``auth_store.py`` — credentials in ``whatsapp_auth``.
- ``emulator/`` — the emulator engine (default), the emulated WhatsApp server shared by all workers through
  PostgreSQL, and the "phone" endpoints ``/emulator/scan|pair|drop``; ``neonize_engine.py`` — the real protocol.
- ``commands.py`` — commands from the ``whatsapp`` queue are recorded on the session row by any worker.
- ``ownership.py`` — the lease that gives each session exactly one live owner (and the takeover bound).
- ``pool.py`` / ``runner.py`` — the owner runs each session; ``policy.py`` — what each disconnect code means.
- ``sessions.py`` — every state change, one transaction with the event it causes.

``whatsapp_sessions.state`` (what the gateway shows):
``new`` → ``pairing`` (``qr_payload/qr_seq/qr_max/qr_expires_at`` or ``pairing_code/pairing_code_expires_at``)
→ ``connecting`` (after the scan: 515, reconnect) → ``connected`` (``phone``). Then ``disconnected`` or
``engine_unreachable`` while retrying (``retry_at``, ``failures``, ``last_error``), ``pairing_expired`` (refs ran
out: ask again), ``paused`` (credentials kept), ``logged_out`` (credentials wiped: pair again), ``replaced`` (440:
opened elsewhere; a pairing request takes it back). The QR/code columns are set only while ``pairing``.

Messages out: ``QrIssued`` (one per ref), ``PairingCodeIssued`` (``ABCD-EFGH``), ``PairingExpired``,
``WhatsAppConnected`` (one per connection; a silent resume after a takeover or restart sends none),
``WhatsAppDisconnected`` (one per failure, ``retrying``/``retry_in_s``; 440 with ``retrying=False``),
``WhatsAppLoggedOut`` (logout, 401, 403, 500). A pairing request for a session with credentials (paused,
replaced, retrying) resumes it without a scan; that is also how a frozen salon is brought back.
"""
