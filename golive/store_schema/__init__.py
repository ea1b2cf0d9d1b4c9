"""Alembic migrations of the run store's schema (see golive/store.py)."""
