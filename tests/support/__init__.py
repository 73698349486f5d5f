"""Helpers shared by the test suites: isolated infrastructure, polling, service processes."""
