-- Network boots Ferric started: a lifecycle's or an operator's boot device `pxe`, or a
-- discovered machine's first boot. Only such a boot gets a ramdisk script and a per-boot
-- token; the token is bound to the boot's node and used once, from the address DHCP gave the
-- node's MAC; only the ramdisk that enrolled with it (its certificate's key) counts as the
-- node's ramdisk, until the boot ends. Replaces `boot_tokens`, whose tokens any GET minted.
CREATE TABLE boots (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    node            TEXT NOT NULL REFERENCES nodes(name),
    cause           TEXT NOT NULL,
    armed_at_ms     BIGINT NOT NULL,
    -- The script must be fetched and the ramdisk enroll before this.
    expires_at_ms   BIGINT NOT NULL,
    -- Bound when the script is handed out.
    mac             TEXT,
    address         TEXT,
    token_id        TEXT UNIQUE,
    token_sha256    TEXT,
    -- The token's secret, sealed: the same script goes again to the same address.
    token_sealed    TEXT,
    script_at_ms    BIGINT,
    -- SHA-256 of the enrolled ramdisk's public key (its certificate's).
    ramdisk_key     TEXT,
    enrolled_at_ms  BIGINT,
    enrolled_from   TEXT,
    ended_at_ms     BIGINT,
    -- `left` (the machine rebooted into its image: its ramdisk may still deliver what it
    -- journaled), `superseded`, `power` or `deleted`.
    end_kind        TEXT,
    end_reason      TEXT
);
CREATE INDEX boots_node ON boots(node, id);
DROP TABLE boot_tokens;
