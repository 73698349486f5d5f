"""Attacks on the gateway, fuzzing against its OpenAPI document, and the log scan's tooling."""
