"""Unified MFA: a second factor (push or TOTP) after the password, one core for every adapter."""

__version__ = "0.1.0"
