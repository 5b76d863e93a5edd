-- When an operator asked to cancel a plan (it ends `failed` with kind `cancelled`: by the
-- agent, told over the link, or by the coordinator when the agent never had it).
ALTER TABLE plans ADD COLUMN cancel_requested_at_ms BIGINT;
