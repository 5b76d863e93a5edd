//! Emulated BMCs: OpenIPMI's `ipmi_sim`, its LAN configuration (`lan.conf`) and its emulator
//! commands (`bmc.emu`) — written the same way for a rack's nodes and for the tests' BMCs — and
//! a rack node's BMC process.
//!
//! ipmi_sim serves IPMI-over-LAN on the address of a `startlan` block (only one `addr` per
//! block), a VM interface for QEMU's `ipmi-bmc-extern` (see [`crate::qemu::ipmi_args`]), and
//! runs a chassis-control program for power and boot device (`PROG 0x20 get power boot`,
//! `PROG 0x20 set power 1`; see [`crate::chassis()`]).

use crate::error::{IoContext, LabError, Result};
use crate::layout::{BmcKind, Node, Rack};
use crate::netns;
use crate::process::{pid_alive, spawn_detached};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Administrator user of every lab BMC.
pub const BMC_USER: &str = "admin";
/// UDP port of every lab BMC's LAN interface.
pub const BMC_PORT: u16 = 623;
/// TCP port of every lab Redfish BMC (HTTPS).
pub const REDFISH_PORT: u16 = 443;

/// The authentication types every emulated BMC allows (for each privilege and each user).
const AUTHS: &str = "none md2 md5 straight";

/// A user of an emulated BMC (a `user` line of its lan.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    /// User id (2 and up; 1 is the anonymous user).
    pub id: u8,
    /// Name.
    pub name: String,
    /// Password (IPMI passwords are at most 20 bytes).
    pub password: String,
    /// Highest privilege: `callback`, `user`, `operator` or `admin`.
    pub privilege: &'static str,
    /// How many sessions the user may hold at once.
    pub max_sessions: u8,
}

/// The LAN configuration of one emulated BMC (ipmi_sim's `-c` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanConf {
    /// Name ipmi_sim gives the BMC.
    pub name: String,
    /// UDP port of the LAN interface, on 127.0.0.1.
    pub port: u16,
    /// The BMC's GUID.
    pub guid: [u8; 16],
    /// TCP port (on 127.0.0.1) of the VM interface a QEMU machine connects to, if any.
    pub vm_port: Option<u16>,
    /// The chassis-control program and its arguments; ipmi_sim appends its request.
    pub chassis_control: String,
    /// Its users.
    pub users: Vec<SimUser>,
}

impl LanConf {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "name \"{}\"\n\
             set_working_mc 0x20\n  \
               startlan 1\n    \
                 addr 127.0.0.1 {}\n    \
                 priv_limit admin\n",
            self.name, self.port
        );
        for level in ["callback", "user", "operator", "admin"] {
            let _ = writeln!(s, "    allowed_auths_{level} {AUTHS}");
        }
        let _ = writeln!(s, "    guid {}\n  endlan", hex::encode(self.guid));
        if let Some(vm) = self.vm_port {
            let _ = writeln!(s, "  serial 15 127.0.0.1 {vm} codec VM");
        }
        let _ = writeln!(s, "  chassis_control \"{}\"", self.chassis_control);
        for u in &self.users {
            let _ = writeln!(
                s,
                "  user {} true \"{}\" \"{}\" {} {} {AUTHS}",
                u.id, u.name, u.password, u.privilege, u.max_sessions
            );
        }
        s
    }
}

/// An analog sensor of an emulated BMC: its sensor data record and its reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmuSensor {
    /// The whole record as Get SDR returns it (header included).
    pub sdr: Vec<u8>,
    /// Sensor number.
    pub number: u8,
    /// IPMI sensor type.
    pub sensor_type: u8,
    /// Raw reading.
    pub raw: u8,
}

/// ipmi_sim's emulator commands (its `-f` file) for a BMC at IPMB address 0x20 with a System
/// Event Log of 1000 entries and `sensors` (threshold sensors on LUN 0).
pub fn emu_commands(sensors: &[EmuSensor]) -> String {
    let mut s = String::from(
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         sel_enable 0x20 1000 0x0a\n",
    );
    for x in sensors {
        let bytes: Vec<String> = x.sdr.iter().map(|b| format!("0x{b:02x}")).collect();
        let _ = writeln!(s, "main_sdr_add 0x20 {}", bytes.join(" "));
        let _ = writeln!(
            s,
            "sensor_add 0x20 0 {} 0x{:02x} 0x01\nsensor_set_value 0x20 0 {} {} 0",
            x.number, x.sensor_type, x.number, x.raw
        );
    }
    s.push_str("mc_enable 0x20\n");
    s
}

/// Writes an emulated BMC's files into `dir` — `lan.conf` from `lan`, `bmc.emu` from
/// [`emu_commands`] — and returns `ipmi_sim`'s arguments to serve them (no console, its
/// persistent state in `dir/bmc-state`).
pub fn write_sim_config(dir: &Path, lan: &LanConf, sensors: &[EmuSensor]) -> Result<Vec<OsString>> {
    let (conf, emu) = (dir.join("lan.conf"), dir.join("bmc.emu"));
    // It holds the BMC's password: its owner's only.
    crate::layout::write_private(&conf, lan.render().as_bytes())
        .or_lab(|| format!("cannot write {}", conf.display()))?;
    std::fs::write(&emu, emu_commands(sensors))
        .or_lab(|| format!("cannot write {}", emu.display()))?;
    Ok(vec![
        "-n".into(),
        "-c".into(),
        conf.into(),
        "-f".into(),
        emu.into(),
        "-s".into(),
        dir.join("bmc-state").into(),
    ])
}

/// Where a node's ipmi_sim listens inside the namespace (the relay forwards to it).
pub(crate) fn backend_port(n: &Node) -> u16 {
    7000 + n.index as u16
}

/// A rack node's lan.conf: LAN behind the relay, the VM interface for its machine, `ferric lab
/// chassis` for power, the rack's administrator.
fn node_lan(rack: &Rack, n: &Node) -> LanConf {
    LanConf {
        name: n.name.clone(),
        port: backend_port(n),
        guid: rand::random(),
        vm_port: Some(n.vm_port),
        chassis_control: format!(
            "{} lab chassis --dir {} --node {}",
            rack.ferric.display(),
            rack.dir.display(),
            n.name
        ),
        users: vec![SimUser {
            id: 2,
            name: BMC_USER.into(),
            password: rack.bmc_password.clone(),
            privilege: "admin",
            // As real BMCs: a handful of sessions per user (many allow 4), so that a client
            // leaking half-open sessions on a lossy network runs out as it would on hardware.
            max_sessions: SESSIONS_PER_USER,
        }],
    }
}

/// Sessions one lab BMC user may hold at once.
pub const SESSIONS_PER_USER: u8 = 4;

/// Starts a node's BMC in the rack's namespace, detached, its pid in `bmc.pid`: ipmi_sim, or
/// Ferric's own (`ferric lab bmc`).
pub(crate) fn start(rack: &Rack, n: &Node) -> Result<()> {
    let dir = rack.node_dir(n);
    let log_path = dir.join("bmc.log");
    let log = std::fs::File::create(&log_path)
        .and_then(|l| Ok((l.try_clone()?, l)))
        .or_lab(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &rack.netns]);
    match n.bmc {
        BmcKind::Openipmi => {
            let args = write_sim_config(&dir, &node_lan(rack, n), &[])?;
            cmd.arg("ipmi_sim").args(args);
        }
        BmcKind::Ferric | BmcKind::Redfish => {
            // The node's directory on its command line: what tells its pid from a reused one.
            cmd.arg(&rack.ferric)
                .args(["lab", "bmc", "--node-dir"])
                .arg(&dir);
        }
    }
    let pid = spawn_detached(cmd.stdin(Stdio::null()).stdout(log.0).stderr(log.1))?;
    let pid_file = dir.join("bmc.pid");
    std::fs::write(&pid_file, pid.to_string())
        .or_lab(|| format!("cannot write {}", pid_file.display()))
}

/// Waits until a node's BMC has bound its socket in the namespace: the LAN socket the relay
/// forwards to, or a Redfish BMC's HTTPS port.
pub(crate) fn wait(rack: &Rack, n: &Node) -> Result<()> {
    let started = Instant::now();
    let listening = || {
        if n.bmc == BmcKind::Redfish {
            netns::tcp_listening(&rack.netns).contains(&format!("{}:{}", n.bmc_ip, REDFISH_PORT))
        } else {
            netns::udp_listening(&rack.netns).contains(&format!("127.0.0.1:{}", backend_port(n)))
        }
    };
    while !listening() {
        if started.elapsed() > Duration::from_secs(15) {
            return Err(LabError::BmcNotUp {
                node: n.name.clone(),
                log: std::fs::read_to_string(rack.node_dir(n).join("bmc.log")).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The pid of a node's BMC process, while it runs.
pub(crate) fn bmc_pid(rack: &Rack, n: &Node) -> Option<i32> {
    let dir = rack.node_dir(n);
    pid_alive(&dir.join("bmc.pid"), &dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_conf_holds_one_lan_address_the_vm_interface_chassis_and_users() {
        let lan = LanConf {
            name: "n0".into(),
            port: 7000,
            guid: [0xab; 16],
            vm_port: Some(9000),
            chassis_control: "/bin/ferric lab chassis --dir /r --node n0".into(),
            users: vec![SimUser {
                id: 2,
                name: "admin".into(),
                password: "secret".into(),
                privilege: "admin",
                max_sessions: 16,
            }],
        };
        assert_eq!(
            lan.render(),
            r#"name "n0"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 7000
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid abababababababababababababababab
  endlan
  serial 15 127.0.0.1 9000 codec VM
  chassis_control "/bin/ferric lab chassis --dir /r --node n0"
  user 2 true "admin" "secret" admin 16 none md2 md5 straight
"#
        );
        let without_vm = LanConf {
            vm_port: None,
            ..lan
        };
        assert!(!without_vm.render().contains("serial"));
    }

    #[test]
    fn emu_commands_add_each_sensor_before_the_bmc_is_enabled() {
        assert_eq!(
            emu_commands(&[]),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n"
        );
        let one = emu_commands(&[EmuSensor {
            sdr: vec![1, 0, 0x51],
            number: 3,
            sensor_type: 2,
            raw: 200,
        }]);
        assert!(
            one.ends_with(
                "main_sdr_add 0x20 0x01 0x00 0x51\n\
                 sensor_add 0x20 0 3 0x02 0x01\n\
                 sensor_set_value 0x20 0 3 200 0\n\
                 mc_enable 0x20\n"
            ),
            "{one}"
        );
    }
}
