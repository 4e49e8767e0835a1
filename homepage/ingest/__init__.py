"""Ingest of public data (every MovieLens layout, MeLU metadata) into a dataset directory."""

from homepage.ingest.badrows import BadRows
from homepage.ingest.movielens import LAYOUTS, Layout, detect_layout, read_movielens
from homepage.ingest.pipeline import ingest_bytes, ingest_movielens

__all__ = ["LAYOUTS", "BadRows", "Layout", "detect_layout", "ingest_bytes", "ingest_movielens", "read_movielens"]
