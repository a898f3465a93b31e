"""Per-user export and erasure across all three stores (``store.privacy``).

    async for chunk in store.privacy.export_user(user_id):
        sys.stdout.buffer.write(chunk)
    report = await store.privacy.erase_user(user_id)

See :mod:`nexus_store.privacy.service` (what runs, in which order, and why re-running is
safe) and :mod:`nexus_store.privacy.policy` (what happens to each linked row).
"""

from __future__ import annotations

from nexus_store.privacy.policy import USER_TOMBSTONE, ErasurePolicy
from nexus_store.privacy.service import ErasureReport, Privacy, Progress

__all__ = ["USER_TOMBSTONE", "ErasurePolicy", "ErasureReport", "Privacy", "Progress"]
