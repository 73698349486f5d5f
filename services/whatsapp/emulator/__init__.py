"""The WhatsApp emulator: a client engine, the shared emulated server, and the "phone" endpoints."""
