-- How a bare-metal node's firmware boots (`bios` or `uefi`): every boot device asked of its
-- BMC says it. Nodes enrolled before were asked for legacy boots and stay so until an
-- operator or an inspection says otherwise; the API's enrollment defaults to `uefi`.
ALTER TABLE bmcs ADD COLUMN boot_mode TEXT NOT NULL DEFAULT 'bios';
-- When an inspection saw the mode from the running firmware (NULL: as enrolled or set).
ALTER TABLE bmcs ADD COLUMN boot_mode_seen_at_ms BIGINT;
-- Which UEFI iPXE its firmware gets: `snponly` (the firmware's NIC driver) or `ipxe`.
ALTER TABLE bmcs ADD COLUMN efi_loader TEXT NOT NULL DEFAULT 'snponly';
