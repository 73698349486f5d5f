"""`make chaos`: the services under faults (kills, broker and database outages, a bad network, a failing YClients).

A run starts the services as processes on a private database and vhost, drives a mixed load through them,
injects one fault per scenario, waits for the drain, and checks Jepsen-style invariants against PostgreSQL,
the sandbox's call log and a tap on the exchange: nothing acknowledged is lost, nothing is applied twice.
"""
