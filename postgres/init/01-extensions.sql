-- Extensions nexus-store's schema uses, created once by the superuser at cluster init so
-- that the migration role needs no superuser rights (the initial migration only runs
-- CREATE EXTENSION IF NOT EXISTS, a no-op when they exist).
--   pgcrypto: gen_random_uuid() on servers older than 13 (built in since).
--   pg_trgm:  trigram GIN index behind substring search (username__ilike).
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
