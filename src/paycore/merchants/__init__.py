"""Merchants, their API keys and gateway credentials, and the audit log."""
