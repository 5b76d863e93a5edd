//! # ferric-lab
//!
//! Racks of virtual bare metal on one machine (`ferric lab`). A rack lives in its own network
//! namespace `ferric-<rack>`:
//!
//! * a provisioning bridge `prov0` that every node's NIC (a tap, iPXE in its option ROM)
//!   plugs into, joined to the host by a veth pair (`flp-<rack>`, `10.248.K.1/24` on the host
//!   side) so that boot services on the host reach it;
//! * a management link, a veth pair (`flm-<rack>`, `10.247.K.1/24` on the host side) whose
//!   namespace end holds one address per BMC (`10.247.K.(10+i)`);
//! * per node: an emulated BMC — OpenIPMI's `ipmi_sim` serving IPMI-over-LAN on
//!   `10.247.K.(10+i):623`, and `/dev/ipmi0` inside the machine through QEMU's
//!   `ipmi-bmc-extern`; or Ferric's own ([`ferric_bmc`]: cipher suites 17 and 3, the boot
//!   flags kept whole and honoured, a `both` node's firmware picked by their EFI bit) — and
//!   a QEMU machine with a blank disk (virtio, NVMe or SATA, of 512
//!   or 4096-byte sectors) and UEFI (OVMF, with an NVRAM per node kept beside the rack's
//!   directory across `down` and `up`) or BIOS firmware, started and stopped by the BMC:
//!   `ipmi_sim` calls `ferric lab chassis` (this crate's [`chassis()`]) for power and boot
//!   device, which starts QEMU booting from the network or the disk, or stops it.
//!
//! Everything a rack starts or makes is recorded under its directory (`rack.json`, pid files),
//! so that `ferric lab down` removes it all, also after the command that built it crashed.
//!
//! The modules:
//!
//! * [`rack`]: the rack file, `up`, `status`, `down`;
//! * [`bmc`]: ipmi_sim's configuration ([`bmc::LanConf`], [`bmc::emu_commands`],
//!   [`bmc::write_sim_config`]) — also what the end-to-end tests' BMCs are made of — and a
//!   node's BMC process;
//! * [`qemu`]: the arguments every machine shares ([`qemu::machine_args`],
//!   [`qemu::ipmi_args`]) and a node's power on and off;
//! * [`chassis`](mod@chassis): the chassis-control program between the two;
//! * [`bmc_lan`]: the rack's BMC network (a relay per BMC address, with loss) and router
//!   advertisements;
//! * [`fault`](mod@fault): injected faults;
//! * [`layout`]: what a rack is made of (`rack.json`), read by every part;
//! * `netns` and `process`: the namespace's links, and the processes a rack starts;
//! * [`error`]: what fails, as [`LabError`].
#![forbid(unsafe_code)]

pub mod bmc;
pub mod bmc_lan;
pub mod chassis;
pub mod error;
pub mod fault;
pub mod ferric_bmc;
pub mod layout;
mod netns;
mod process;
pub mod qemu;
pub mod rack;
pub mod redfish_bmc;

pub use bmc::{BMC_PORT, BMC_USER};
pub use bmc_lan::{ra_prefix, relay, router_advertisement};
pub use chassis::chassis;
pub use error::{LabError, Result};
pub use fault::{Fault, fault};
pub use layout::{BmcKind, DiskBus, Firmware, NetBoot, Node, Rack};
pub use process::run;
pub use qemu::{IPXE_ROM, OVMF_CODE, OVMF_VARS, probe_accel, qemu_pid};
pub use rack::{NodeStatus, UpOptions, bmc_address, down, status, up};
