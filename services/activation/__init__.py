"""Activation worker: api_key + partner callback, lifecycle webhooks (uninstall/freeze), WhatsApp link state."""
