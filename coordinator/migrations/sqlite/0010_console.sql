-- Where the driving agent finds a bare-metal node's serial console log on its host (a console
-- server's file, or the lab's QEMU's), which it tails for the coordinator; NULL: none.
ALTER TABLE bmcs ADD COLUMN console_log TEXT;
