-- Schema version 3: hardening of the management point's tables.

-- last_sequence is NULL until a client's first batch is applied, so a first batch
-- numbered 0 is applied instead of being taken for a replay. Until now 0 always meant
-- "nothing applied" (a batch numbered 0 was never applied), so 0 becomes NULL.
ALTER TABLE clients ALTER COLUMN last_sequence DROP NOT NULL;
ALTER TABLE clients ALTER COLUMN last_sequence DROP DEFAULT;
UPDATE clients SET last_sequence = NULL WHERE last_sequence = 0;

-- Bumped whenever the client's token changes (registration, rotation, revocation,
-- release), so every management point sharing the store notices a replaced token.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS token_generation BIGINT NOT NULL DEFAULT 0;
-- Set by `patchops client revoke`: the name cannot register again until released.
ALTER TABLE clients ADD COLUMN IF NOT EXISTS revoked_at BIGINT;

-- Rejected batches keep the size received and a bounded prefix of the body only.
ALTER TABLE rejected_messages ADD COLUMN IF NOT EXISTS size BIGINT NOT NULL DEFAULT 0;
UPDATE rejected_messages SET size = octet_length(raw);
UPDATE rejected_messages SET raw = left(raw, 4096) WHERE length(raw) > 4096;
