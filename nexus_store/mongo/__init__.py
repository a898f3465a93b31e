"""MongoDB backend: analytics events and the audit log."""
