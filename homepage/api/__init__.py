"""The HTTP API: ``create_app()`` in ``homepage.api.app``."""
