"""The services: gateway, registration, whatsapp, activation (each runs as `python -m services.<name>`)."""
