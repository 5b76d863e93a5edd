-- When the last BMC read failed (agent clock), apart from the last read that succeeded
-- (observed_at_ms): a node whose BMC stopped answering shows so instead of its last power.
ALTER TABLE bmcs ADD COLUMN error_at_ms BIGINT;
