//! `ferric lab bmc`: Ferric's own BMC for a rack node (`--bmc ferric`). It serves IPMI over
//! LAN with ferric-ipmi's BMC — cipher suites 17 and 3 — on the address the rack's BMC relay
//! forwards to, and drives the node's QEMU as its chassis. Unlike ipmi_sim it keeps the boot
//! flags whole and honours them: the device (network or disk) as before, and for a node with
//! both firmwares the EFI bit picks UEFI or BIOS at the next power-on, as on a server with a
//! compatibility module. A `--bmc redfish` node's BMC is [`crate::redfish_bmc`].

use crate::error::{IoContext, LabError, Result};
use crate::fault::has_fault;
use crate::layout::{Firmware, Node, Rack};
use crate::qemu::{acpi_shutdown, boot_mode, next_boot, power_off, power_on, qemu_pid};
use crate::{BMC_USER, bmc};
use ferric_ipmi::bmc::{Bmc, BmcConfig, BootFlags, Chassis, Control};
use std::path::Path;

/// A rack node as a BMC's chassis.
#[derive(Debug)]
struct NodeChassis {
    rack: Rack,
    node: Node,
}

impl NodeChassis {
    fn dir(&self) -> std::path::PathBuf {
        self.rack.node_dir(&self.node)
    }

    /// Writes what the flags say of the next boot: the device (`boot`: pxe or default), and
    /// for a node with both firmwares the mode (`mode`: uefi or bios).
    fn apply(&self, flags: BootFlags) -> Result<()> {
        if !flags.valid() || has_fault(&self.dir(), "boot-stuck") {
            return Ok(());
        }
        let device = match flags.device() {
            1 => "pxe",
            2 | 3 => "disk",
            5 => "cdrom",
            6 => "bios",
            _ => "default",
        };
        let boot = self.dir().join("boot");
        std::fs::write(&boot, device).or_lab(|| format!("cannot write {}", boot.display()))?;
        if self.node.firmware == Firmware::Both && qemu_pid(&self.rack, &self.node).is_none() {
            let mode = self.dir().join("mode");
            let m = if flags.efi() { "uefi" } else { "bios" };
            std::fs::write(&mode, m).or_lab(|| format!("cannot write {}", mode.display()))?;
        }
        Ok(())
    }
}

impl Chassis for NodeChassis {
    fn power_on(&self) -> bool {
        qemu_pid(&self.rack, &self.node).is_some()
    }

    fn control(&mut self, op: Control, boot: BootFlags) -> std::result::Result<(), String> {
        if has_fault(&self.dir(), "power-stuck") {
            // The machine ignores its BMC, as a stuck power relay does; the BMC says yes.
            return Ok(());
        }
        let (rack, n) = (&self.rack, &self.node);
        let on = qemu_pid(rack, n).is_some();
        let result = match op {
            Control::Off => {
                power_off(rack, n);
                Ok(())
            }
            Control::Soft if on => acpi_shutdown(rack, n),
            Control::Soft => Ok(()),
            Control::On if on => Ok(()),
            Control::On | Control::Cycle | Control::Reset => {
                power_off(rack, n);
                self.apply(boot).and_then(|()| power_on(rack, n))
            }
        };
        // The console hears only "cannot execute" (0xD5); why goes to the BMC's log.
        result.map_err(|e| {
            eprintln!("{}: {op:?}: {e}", n.name);
            e.to_string()
        })
    }

    fn boot_flags_set(&mut self, flags: BootFlags) {
        // A running node reads its boot device at its next reset (QEMU's boot order); its
        // firmware changes only when it is next powered on.
        if let Err(e) = self
            .apply(flags)
            .and_then(|()| next_boot(&self.rack, &self.node, flags.valid() && flags.device() == 1))
        {
            eprintln!("{}: boot flags {:02x?}: {e}", self.node.name, flags.0);
        }
    }
}

/// Serves a node's BMC until killed: `node_dir` is the node's directory in its rack.
pub fn serve(node_dir: &Path) -> Result<()> {
    let (Some(rack_dir), Some(name)) = (
        node_dir.parent(),
        node_dir.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(LabError::ChassisUsage);
    };
    let rack = Rack::load(rack_dir)?;
    let node = rack.node(name)?.clone();
    if node.bmc == crate::BmcKind::Redfish {
        return crate::redfish_bmc::serve(rack, node);
    }
    let mut cfg = BmcConfig::new(BMC_USER, &rack.bmc_password);
    // A stable GUID per node, as a machine's.
    cfg.guid = guid_of(&node.mac);
    cfg.max_sessions = usize::from(bmc::SESSIONS_PER_USER);
    let port = bmc::backend_port(&node);
    let sock = std::net::UdpSocket::bind(("127.0.0.1", port))
        .or_lab(|| format!("cannot bind the BMC of {name} to 127.0.0.1:{port}"))?;
    eprintln!(
        "{name}: Ferric BMC on 127.0.0.1:{port}, cipher suites 17 and 3, boots {}",
        boot_mode(&rack, &node)
    );
    let bmc = std::sync::Mutex::new(Bmc::new(cfg, NodeChassis { rack, node }));
    let stop = std::sync::atomic::AtomicBool::new(false);
    ferric_ipmi::bmc::serve(&sock, &bmc, &stop).or_lab(|| format!("the BMC of {name} stopped"))
}

/// 16 bytes from a MAC address: the node's GUID.
fn guid_of(mac: &str) -> [u8; 16] {
    let mut g = [0u8; 16];
    for (i, b) in mac.bytes().enumerate() {
        g[i % 16] ^= b;
    }
    g
}
