"""A stand-in for YClients (partner API, marketplace page, lifecycle webhooks) for local runs and tests."""
