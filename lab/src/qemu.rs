//! The QEMU machines: the arguments every Ferric machine shares (the lab's nodes and the
//! tests' virtual machines), and a rack node's power on, off and ACPI button.

use crate::error::{IoContext, LabError, Result};
use crate::fault::has_fault;
use crate::layout::{Node, Rack};
use crate::process::{is_running, kill_wait, pid_alive};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// QEMU's program.
pub const QEMU: &str = "qemu-system-x86_64";

/// iPXE for the nodes' e1000 NIC (Debian's ipxe-qemu). Its virtio ROMs are never run by
/// QEMU 10's SeaBIOS here, so the nodes get an e1000.
pub const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/pxe-e1000.rom";

/// KVM when the host's hardware KVM module is loaded; TCG otherwise.
pub fn probe_accel() -> &'static str {
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    if Path::new("/dev/kvm").exists() && hardware {
        "kvm"
    } else {
        "tcg"
    }
}

/// The arguments every machine starts with: a PC with one vCPU and `memory_mib` MiB under
/// `accel` (`kvm` or `tcg`), no display and no monitor. Add the firmware or kernel, disks,
/// NICs and consoles after them.
pub fn machine_args(accel: &str, memory_mib: u64) -> Vec<String> {
    [
        "-machine",
        "pc",
        "-accel",
        accel,
        "-m",
        &memory_mib.to_string(),
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
    ]
    .map(String::from)
    .to_vec()
}

/// The arguments that give a machine an IPMI KCS interface (`/dev/ipmi0` in the guest, found
/// by `ipmi_si`) whose BMC is an `ipmi_sim` VM interface on `127.0.0.1:vm_port` (its lan.conf
/// `serial … codec VM` line, see [`crate::bmc::LanConf::vm_port`]). QEMU retries the
/// connection every second, so the BMC may start before or after the machine.
pub fn ipmi_args(vm_port: u16) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=ipmi0,host=127.0.0.1,port={vm_port},reconnect-ms=1000"),
        "-device".into(),
        "ipmi-bmc-extern,id=bmc0,chardev=ipmi0".into(),
        "-device".into(),
        "isa-ipmi-kcs,bmc=bmc0".into(),
    ]
}

/// blkdebug rules that fail every read and write with EIO (the `disk-fail` fault).
const FAILING_DISK: &str = "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n\n\
                            [inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n";

/// QEMU's arguments for a rack node, whose files are in `dir`: booting from the network
/// (`pxe`) or its disk, the disk behind the blkdebug rules in `failing` if given, daemonized
/// with its pid in `qemu.pid`.
fn node_args(rack: &Rack, n: &Node, dir: &Path, pxe: bool, failing: Option<&Path>) -> Vec<String> {
    let disk = dir.join("disk.img");
    let drive = match failing {
        Some(rules) => format!(
            "file=blkdebug:{}:{},format=raw,if=virtio",
            rules.display(),
            disk.display()
        ),
        None => format!("file={},format=raw,if=virtio", disk.display()),
    };
    let mut a = vec!["-name".to_owned(), n.name.clone()];
    a.extend(machine_args(&rack.accel, rack.memory_mib));
    a.extend(["-vga".into(), "none".into()]);
    let file =
        |id: &str, name: &str| format!("file,id={id},path={},append=on", dir.join(name).display());
    a.extend([
        "-chardev".into(),
        file("con", "console.log"),
        "-serial".into(),
        "chardev:con".into(),
        // The firmware's own log (SeaBIOS writes it to port 0x402): why a boot failed.
        "-chardev".into(),
        file("fw", "firmware.log"),
        "-device".into(),
        "isa-debugcon,iobase=0x402,chardev=fw".into(),
        "-drive".into(),
        drive,
        "-netdev".into(),
        format!("tap,id=n0,ifname={},script=no,downscript=no", n.tap),
        "-device".into(),
        format!("e1000,netdev=n0,mac={},romfile={IPXE_ROM}", n.mac),
        "-boot".into(),
        format!("order={}", if pxe { "n" } else { "c" }),
    ]);
    a.extend(ipmi_args(n.vm_port));
    a.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        "-pidfile".into(),
        dir.join("qemu.pid").display().to_string(),
        "-daemonize".into(),
    ]);
    a
}

/// The QEMU pid of a running node.
pub fn qemu_pid(rack: &Rack, n: &Node) -> Option<i32> {
    let dir = rack.node_dir(n);
    pid_alive(&dir.join("qemu.pid"), &dir.display().to_string()).filter(|p| is_running(*p))
}

/// Starts a node's QEMU (booting from the network or its disk, as the BMC last set).
pub(crate) fn power_on(rack: &Rack, n: &Node) -> Result<()> {
    let dir = rack.node_dir(n);
    let boot = std::fs::read_to_string(dir.join("boot")).unwrap_or_default();
    let rules = dir.join("blkdebug.conf");
    let failing = has_fault(&dir, "disk-fail");
    if failing {
        std::fs::write(&rules, FAILING_DISK)
            .or_lab(|| format!("cannot write {}", rules.display()))?;
    }
    let args = node_args(
        rack,
        n,
        &dir,
        boot.trim() == "pxe",
        failing.then_some(&*rules),
    );
    let log_path = dir.join("qemu.log");
    let log = std::fs::File::create(&log_path)
        .and_then(|l| Ok((l.try_clone()?, l)))
        .or_lab(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new(QEMU);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log.0)
        .stderr(log.1);
    let out = cmd.status().map_err(|source| LabError::Spawn {
        command: QEMU.into(),
        source,
    })?;
    if !out.success() {
        return Err(LabError::Qemu {
            node: n.name.clone(),
            log: std::fs::read_to_string(&log_path).unwrap_or_default(),
        });
    }
    Ok(())
}

/// Stops a node's QEMU, if it runs.
pub(crate) fn power_off(rack: &Rack, n: &Node) {
    if let Some(pid) = qemu_pid(rack, n) {
        kill_wait(pid, Duration::from_secs(5));
    }
}

/// Runs one QMP command on a running node's QEMU.
fn qmp(rack: &Rack, n: &Node, command: &str) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let sock = rack.node_dir(n).join("qmp.sock");
    let run = || -> std::io::Result<()> {
        let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut line = String::new();
        r.read_line(&mut line)?; // greeting
        s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        line.clear();
        r.read_line(&mut line)?;
        s.write_all(command.as_bytes())?;
        s.write_all(b"\n")?;
        line.clear();
        r.read_line(&mut line)?;
        Ok(())
    };
    run().map_err(|source| LabError::Qmp {
        sock: sock.clone(),
        source,
    })
}

/// ACPI power button through QMP.
pub(crate) fn acpi_shutdown(rack: &Rack, n: &Node) -> Result<()> {
    qmp(rack, n, "{\"execute\":\"system_powerdown\"}")
}

/// The device a running node boots from at its next reset (a reboot from inside, as real
/// firmware asks its BMC for the boot device on every boot).
pub(crate) fn next_boot(rack: &Rack, n: &Node, pxe: bool) -> Result<()> {
    if qemu_pid(rack, n).is_none() {
        return Ok(());
    }
    let order = if pxe { "n" } else { "c" };
    qmp(
        rack,
        n,
        &format!(
            "{{\"execute\":\"human-monitor-command\",\"arguments\":{{\"command-line\":\"boot_set {order}\"}}}}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn a_node_boots_as_its_bmc_says_with_ipmi_e1000_and_its_consoles() {
        let rack = Rack {
            name: "r".into(),
            dir: "/lab/r".into(),
            netns: "ferric-r".into(),
            subnet: 20,
            memory_mib: 256,
            disk_bytes: 1 << 20,
            accel: "tcg".into(),
            bmc_password: "p".into(),
            ferric: "ferric".into(),
            nodes: vec![Node {
                name: "r-n0".into(),
                index: 0,
                mac: "52:54:00:00:00:00".into(),
                bmc_ip: "10.247.20.10".into(),
                vm_port: 9000,
                tap: "tap0".into(),
            }],
        };
        let n = &rack.nodes[0];
        let dir = rack.node_dir(n);
        let a = node_args(&rack, n, &dir, true, None);
        assert_eq!(pair(&a, "-accel"), ["tcg"]);
        assert_eq!(pair(&a, "-m"), ["256"]);
        assert_eq!(pair(&a, "-boot"), ["order=n"]);
        assert_eq!(
            pair(&a, "-drive"),
            ["file=/lab/r/r-n0/disk.img,format=raw,if=virtio"]
        );
        assert_eq!(
            pair(&a, "-device"),
            [
                "isa-debugcon,iobase=0x402,chardev=fw",
                "e1000,netdev=n0,mac=52:54:00:00:00:00,romfile=/usr/lib/ipxe/qemu/pxe-e1000.rom",
                "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                "isa-ipmi-kcs,bmc=bmc0"
            ]
        );
        assert_eq!(
            pair(&a, "-chardev"),
            [
                "file,id=con,path=/lab/r/r-n0/console.log,append=on",
                "file,id=fw,path=/lab/r/r-n0/firmware.log,append=on",
                "socket,id=ipmi0,host=127.0.0.1,port=9000,reconnect-ms=1000"
            ]
        );
        assert_eq!(a.last().map(String::as_str), Some("-daemonize"));

        let rules = dir.join("blkdebug.conf");
        let a = node_args(&rack, n, &dir, false, Some(&rules));
        assert_eq!(pair(&a, "-boot"), ["order=c"]);
        assert_eq!(
            pair(&a, "-drive"),
            ["file=blkdebug:/lab/r/r-n0/blkdebug.conf:/lab/r/r-n0/disk.img,format=raw,if=virtio"]
        );
    }
}
