"""`unified-mfa serve`: the HTTP service (device, auth and admin APIs, health and metrics).

A thin protocol layer over the core's `MFA` facade: it authenticates callers, turns requests
into core calls and core results or errors into JSON, and waits for push decisions without
holding a thread. It decides nothing about MFA itself (docs/api.md).
"""
