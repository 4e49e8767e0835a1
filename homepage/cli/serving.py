"""Serving commands: publish, rollback, serve."""
