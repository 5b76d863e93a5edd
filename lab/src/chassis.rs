//! `ferric lab chassis`: the chassis-control program ipmi_sim runs for a rack node's power
//! and boot device, which starts and stops the node's QEMU.

use crate::error::{IoContext, LabError, Result};
use crate::fault::has_fault;
use crate::layout::Rack;
use crate::qemu::{acpi_shutdown, next_boot, power_off, power_on, qemu_pid};
use std::path::Path;

/// `ferric lab chassis`: ipmi_sim's chassis-control program for one node. ipmi_sim runs it as
/// `… [0x20] get power boot` (answer lines `power:1`, `boot:pxe`) and `… [0x20] set power
/// 1|0`, `set boot pxe|default|cdrom|bios|none`, `set reset 1`, `set shutdown 1`. It reads the
/// output to the end, so QEMU is started fully detached (`-daemonize`).
pub fn chassis(dir: &Path, node: &str, args: &[String]) -> Result<String> {
    let rack = Rack::load(dir)?;
    let n = rack.node(node)?.clone();
    let ndir = rack.node_dir(&n);
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("0x"))
        .collect();
    let stuck = has_fault(&ndir, "power-stuck");
    let mut out = String::new();
    match args.split_first() {
        Some((&"get", keys)) => {
            for k in keys {
                match *k {
                    "power" => out.push_str(&format!(
                        "power:{}\n",
                        u8::from(qemu_pid(&rack, &n).is_some())
                    )),
                    "boot" => out.push_str(&format!(
                        "boot:{}\n",
                        std::fs::read_to_string(ndir.join("boot"))
                            .unwrap_or_else(|_| "default".into())
                            .trim()
                    )),
                    _ => {}
                }
            }
        }
        Some((&"set", pairs)) => {
            for kv in pairs.chunks(2) {
                match kv {
                    ["power", v] if !stuck => {
                        let on = qemu_pid(&rack, &n).is_some();
                        if *v == "1" && !on {
                            power_on(&rack, &n)?;
                        } else if *v == "0" && on {
                            power_off(&rack, &n);
                        }
                    }
                    ["reset", "1"] if !stuck => {
                        power_off(&rack, &n);
                        power_on(&rack, &n)?;
                    }
                    ["shutdown", "1"] if !stuck => acpi_shutdown(&rack, &n)?,
                    ["boot", _] if has_fault(&ndir, "boot-stuck") => {}
                    ["boot", v] => {
                        let file = ndir.join("boot");
                        std::fs::write(&file, v)
                            .or_lab(|| format!("cannot write {}", file.display()))?;
                        next_boot(&rack, &n, *v == "pxe")?;
                    }
                    _ => {}
                }
            }
        }
        _ => return Err(LabError::ChassisUsage),
    }
    Ok(out)
}
