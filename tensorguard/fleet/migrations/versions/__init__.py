"""Alembic revision scripts of the fleet database, oldest first."""
