"""Homepage row ranking service: state, page building, replay, storage and the API."""

__version__ = "0.1.0"
