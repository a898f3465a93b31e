"""Backup and restore of every store: one archive, verified, restored all or nothing.

``store.backup`` (:class:`~nexus_store.backup.service.Backup`) and ``nexus-store backup``.
The drivers and ``cryptography`` load only when a backup runs.
"""
