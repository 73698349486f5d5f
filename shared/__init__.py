"""Code every service shares: settings, messages, broker, database, YClients client, tokens, probes."""
