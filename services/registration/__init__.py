"""Registration worker: `RegistrationRequested` → company upsert, audit event, enrichment from YClients."""
