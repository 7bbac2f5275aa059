"""Alembic migrations of the fleet application database (shipped inside the package).

Apply them with :func:`tensorguard.fleet.db.migrate`; no ``alembic.ini`` is needed.
"""
