//! # ferric-ramdisk
//!
//! The deploy ramdisk of Ferric. It will own two things:
//!
//! * the agent that runs from RAM on a PXE-booted bare-metal node: it dials the coordinator
//!   with the per-boot token and CA fingerprint from its kernel command line, inspects the
//!   hardware, erases disks, streams OS images to disk, sets the next boot device through
//!   in-band IPMI (`/dev/ipmi0`) and reboots;
//! * the builder of the kernel and initramfs that the coordinator's boot services hand to
//!   nodes over PXE.
//!
//! Nothing is implemented here yet; the bare-metal issues fill it.
#![forbid(unsafe_code)]
