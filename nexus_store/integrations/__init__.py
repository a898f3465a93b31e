"""Web framework integrations, each an optional extra imported only by its own module.

- :mod:`nexus_store.integrations.asgi`: Starlette and FastAPI (extra ``asgi``): lifespan,
  rate-limit middleware and dependency, session dependency, health routes.
- :mod:`nexus_store.integrations.django`: Django (extra ``django``): rate-limit middleware,
  health views, a session backend on ``store.sessions``, and the blocking store they share.

Importing this package imports neither framework. See ``docs/integrations.md``.
"""
