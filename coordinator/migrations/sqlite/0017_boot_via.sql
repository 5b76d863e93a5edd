-- How a bare-metal node boots its deploy ramdisk: `network` (PXE or UEFI HTTP, Ferric's DHCP
-- and iPXE) or `media` (its Redfish BMC's virtual media, an ISO the coordinator makes).
ALTER TABLE bmcs ADD COLUMN boot_via TEXT NOT NULL DEFAULT 'network';
