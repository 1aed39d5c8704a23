-- Schema version 2: client tokens for the management point, and the indexes catalog
-- deltas read by. Idempotent where the dialect allows; runs once per store.

-- sha256 (hex) of the token a client authenticates with at the management point.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS token_sha256 TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS clients_token ON clients (token_sha256);
CREATE INDEX IF NOT EXISTS catalog_updates_from ON catalog_updates (valid_from);
CREATE INDEX IF NOT EXISTS catalog_updates_to ON catalog_updates (valid_to);
