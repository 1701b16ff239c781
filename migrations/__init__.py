"""Alembic migrations for the control plane's database (the only way its schema changes)."""
