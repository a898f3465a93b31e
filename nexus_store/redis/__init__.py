"""Redis backend: sessions, cache, rate limits, realtime and queues."""
