"""Alembic migrations of the registry schema; ``service.database.upgrade_schema`` runs them."""
