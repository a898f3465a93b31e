"""PostgreSQL backend: engines, models, the entity repository and migrations."""
