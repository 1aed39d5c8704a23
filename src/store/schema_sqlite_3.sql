-- Schema version 3: hardening of the management point's tables.

-- last_sequence is NULL until a client's first batch is applied, so a first batch
-- numbered 0 is applied instead of being taken for a replay. Until now 0 always meant
-- "nothing applied" (a batch numbered 0 was never applied), so 0 becomes NULL.
ALTER TABLE clients ADD COLUMN applied_sequence INTEGER;
UPDATE clients SET applied_sequence = last_sequence WHERE last_sequence > 0;
ALTER TABLE clients DROP COLUMN last_sequence;
ALTER TABLE clients RENAME COLUMN applied_sequence TO last_sequence;

-- Bumped whenever the client's token changes (registration, rotation, revocation,
-- release), so every management point sharing the store notices a replaced token.
ALTER TABLE clients ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 0;
-- Set by `patchops client revoke`: the name cannot register again until released.
ALTER TABLE clients ADD COLUMN revoked_at INTEGER;

-- Rejected batches keep the size received and a bounded prefix of the body only.
ALTER TABLE rejected_messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE rejected_messages SET size = length(CAST(raw AS BLOB));
UPDATE rejected_messages SET raw = substr(raw, 1, 4096) WHERE length(raw) > 4096;
