//! The QEMU machines: the arguments every Ferric machine shares (the lab's nodes and the
//! tests' virtual machines), and a rack node's power on, off and ACPI button.

use crate::error::{IoContext, LabError, Result};
use crate::fault::has_fault;
use crate::layout::{BmcKind, DiskBus, Firmware, NetBoot, Node, Rack};
use crate::process::{is_running, kill_wait, pid_alive};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// QEMU's program.
pub const QEMU: &str = "qemu-system-x86_64";

/// iPXE for the nodes' e1000 NIC (Debian's ipxe-qemu). Its virtio ROMs are never run by
/// QEMU 10's SeaBIOS here, so the nodes get an e1000.
pub const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/pxe-e1000.rom";

/// iPXE for the e1000 of a node with both firmwares: its legacy and its EFI driver in one
/// ROM, as a server NIC's option ROM carries both.
pub const IPXE_EFI_ROM: &str = "/usr/lib/ipxe/qemu/efi-e1000.rom";

/// The firmware a node boots now: its own, or for a `both` node the mode its BMC chose last
/// (the `mode` file; UEFI until told otherwise).
pub fn boot_mode(rack: &Rack, n: &Node) -> Firmware {
    match n.firmware {
        Firmware::Both => match std::fs::read_to_string(rack.node_dir(n).join("mode")).as_deref() {
            Ok("bios") => Firmware::Bios,
            _ => Firmware::Uefi,
        },
        f => f,
    }
}

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

/// OVMF's firmware code (read-only, shared by every UEFI node).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF's variable store template: each UEFI node's NVRAM starts as a copy of it.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// QEMU's arguments for a rack node, whose files are in `dir`: booting from the network
/// (`pxe`) or its disk, the disk behind the blkdebug rules in `failing` if given, daemonized
/// with its pid in `qemu.pid`.
///
/// A BIOS node is a PC with SeaBIOS and an e1000 whose iPXE option ROM does network boot;
/// the boot device is SeaBIOS's boot order. A UEFI node is a q35 with OVMF and its own NVRAM
/// and a virtio NIC without an option ROM, so that the firmware's own PXE and HTTP boot run
/// on its own NIC driver, as on a server; network boot is the NIC's `bootindex` (OVMF puts
/// QEMU's boot order first), and without one the NVRAM's boot order decides.
fn node_args(
    rack: &Rack,
    n: &Node,
    dir: &Path,
    pxe: bool,
    failing: Option<&Path>,
) -> Result<Vec<String>> {
    let disk = dir.join("disk.img");
    let file = match failing {
        Some(rules) => format!("blkdebug:{}:{}", rules.display(), disk.display()),
        None => disk.display().to_string(),
    };
    let uefi = boot_mode(rack, n) == Firmware::Uefi;
    let both = n.firmware == Firmware::Both;
    // A Redfish node has a CD drive (its BMC's virtual media) and may boot from it.
    let has_cd = n.bmc == BmcKind::Redfish;
    let cdrom =
        has_cd && std::fs::read_to_string(dir.join("boot")).is_ok_and(|b| b.trim() == "cdrom");
    let pxe = pxe && !cdrom;
    let order = if cdrom {
        "d"
    } else if pxe {
        "n"
    } else {
        "c"
    };
    let mut a = vec!["-name".to_owned(), n.name.clone()];
    a.extend(machine_args(&rack.accel, rack.memory_mib));
    if uefi || both {
        // q35 (OVMF's machine) instead of the PC.
        let m = a.iter().position(|x| x == "pc").unwrap_or(1);
        a[m] = "q35".into();
    }
    if uefi {
        a.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=1,file={}",
                rack.nvram(n).display()
            ),
        ]);
        if n.netboot == NetBoot::Http {
            for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                a.extend([
                    "-fw_cfg".into(),
                    format!("name=opt/org.tianocore/{knob},string=no"),
                ]);
            }
        }
    }
    a.extend(["-vga".into(), "none".into()]);
    let log =
        |id: &str, name: &str| format!("file,id={id},path={},append=on", dir.join(name).display());
    a.extend([
        "-chardev".into(),
        log("con", "console.log"),
        "-serial".into(),
        "chardev:con".into(),
        // The firmware's own log (SeaBIOS writes it to port 0x402): why a boot failed.
        "-chardev".into(),
        log("fw", "firmware.log"),
        "-device".into(),
        "isa-debugcon,iobase=0x402,chardev=fw".into(),
        "-drive".into(),
        format!("file={file},format=raw,if=none,id=disk0"),
        "-device".into(),
        disk_device(n)?,
    ]);
    if has_cd {
        let iso = dir.join("media.iso");
        let file = if iso.exists() {
            format!(",file={},format=raw", iso.display())
        } else {
            String::new()
        };
        a.extend([
            "-drive".into(),
            format!("if=none,id=cd0,media=cdrom,readonly=on{file}"),
            "-device".into(),
            format!(
                "ide-cd,drive=cd0,bus=ide.1,id={CDROM}{}",
                if cdrom && uefi { ",bootindex=1" } else { "" }
            ),
        ]);
    }
    a.extend([
        "-netdev".into(),
        format!("tap,id=n0,ifname={},script=no,downscript=no", n.tap),
        "-device".into(),
    ]);
    let bootindex = if pxe { ",bootindex=1" } else { "" };
    if both {
        a.push(format!(
            "e1000,netdev=n0,mac={},romfile={IPXE_EFI_ROM},id=nic0{}",
            n.mac,
            if uefi { bootindex } else { "" }
        ));
        if !uefi {
            a.extend(["-boot".into(), format!("order={order}")]);
        }
    } else if uefi {
        a.push(format!(
            "virtio-net-pci,netdev=n0,mac={},romfile=,id=nic0{bootindex}",
            n.mac
        ));
    } else {
        a.extend([
            format!("e1000,netdev=n0,mac={},romfile={IPXE_ROM}", n.mac),
            "-boot".into(),
            format!("order={order}"),
        ]);
    }
    if n.bmc == BmcKind::Openipmi {
        a.extend(ipmi_args(n.vm_port));
    }
    a.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        "-pidfile".into(),
        dir.join("qemu.pid").display().to_string(),
        "-daemonize".into(),
    ]);
    Ok(a)
}

/// The `-device` of a node's disk (`disk0`).
fn disk_device(n: &Node) -> Result<String> {
    let sectors = match n.sector_size {
        512 | 4096 => format!(
            "logical_block_size={0},physical_block_size={0}",
            n.sector_size
        ),
        other => {
            return Err(LabError::BadDisk(format!(
                "{}: sectors of {other} bytes (512 or 4096)",
                n.name
            )));
        }
    };
    Ok(match n.disk_bus {
        DiskBus::Virtio => format!("virtio-blk-pci,drive=disk0,{sectors}"),
        // The serial is what `/dev/disk/by-id` and root device hints see.
        DiskBus::Nvme => format!("nvme,drive=disk0,serial={},{sectors}", n.name),
        DiskBus::Sata if n.sector_size == 512 => "ide-hd,drive=disk0,bus=ide.0".to_owned(),
        DiskBus::Sata => {
            return Err(LabError::BadDisk(format!(
                "{}: QEMU's SATA disks have 512-byte sectors; use nvme or virtio for 4096",
                n.name
            )));
        }
    })
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
    )?;
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
        // The answer, past any events QEMU sends meanwhile.
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || !line.contains("\"event\"") {
                break;
            }
        }
        if line.contains("\"error\"") {
            return Err(std::io::Error::other(format!(
                "QEMU refused {command}: {}",
                line.trim()
            )));
        }
        Ok(())
    };
    run().map_err(|source| LabError::Qmp {
        sock: sock.clone(),
        source,
    })
}

/// The qdev id of a Redfish node's CD drive.
const CDROM: &str = "cdrom0";

/// Puts `iso` into a Redfish node's CD drive (`None`: ejects it): at once through QMP when the
/// node runs, and at every later power-on (the file `media.iso` in its directory is the
/// medium).
pub(crate) fn change_media(rack: &Rack, n: &Node, iso: Option<&Path>) -> Result<()> {
    if qemu_pid(rack, n).is_none() {
        return Ok(());
    }
    let command = match iso {
        Some(p) => format!(
            "{{\"execute\":\"blockdev-change-medium\",\"arguments\":{{\"id\":\"{CDROM}\",\"filename\":{},\"format\":\"raw\",\"read-only-mode\":\"read-only\"}}}}",
            serde_json::Value::String(p.display().to_string())
        ),
        None => {
            format!("{{\"execute\":\"eject\",\"arguments\":{{\"id\":\"{CDROM}\",\"force\":true}}}}")
        }
    };
    qmp(rack, n, &command)
}

/// ACPI power button through QMP.
pub(crate) fn acpi_shutdown(rack: &Rack, n: &Node) -> Result<()> {
    qmp(rack, n, "{\"execute\":\"system_powerdown\"}")
}

/// The device a running node boots from at its next reset (a reboot from inside, as real
/// firmware asks its BMC for the boot device on every boot): SeaBIOS's boot order, or the
/// UEFI node's NIC `bootindex` (QEMU hands OVMF the new boot order at the reset).
pub(crate) fn next_boot(rack: &Rack, n: &Node, pxe: bool) -> Result<()> {
    if qemu_pid(rack, n).is_none() {
        return Ok(());
    }
    let command = if boot_mode(rack, n) == Firmware::Uefi {
        format!(
            "{{\"execute\":\"qom-set\",\"arguments\":{{\"path\":\"/machine/peripheral/nic0\",\"property\":\"bootindex\",\"value\":{}}}}}",
            if pxe { 1 } else { -1 }
        )
    } else {
        let order = if pxe { "n" } else { "c" };
        format!(
            "{{\"execute\":\"human-monitor-command\",\"arguments\":{{\"command-line\":\"boot_set {order}\"}}}}"
        )
    };
    qmp(rack, n, &command)
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

    fn rack(n: Node) -> Rack {
        Rack {
            name: "r".into(),
            dir: "/lab/r".into(),
            netns: "ferric-r".into(),
            subnet: 20,
            memory_mib: 256,
            disk_bytes: 1 << 20,
            accel: "tcg".into(),
            bmc_password: "p".into(),
            ferric: "ferric".into(),
            nodes: vec![n],
        }
    }

    fn node(firmware: Firmware, disk_bus: DiskBus, sector_size: u32) -> Node {
        Node {
            name: "r-n0".into(),
            index: 0,
            mac: "52:54:00:00:00:00".into(),
            bmc_ip: "10.247.20.10".into(),
            vm_port: 9000,
            tap: "tap0".into(),
            firmware,
            disk_bus,
            sector_size,
            netboot: NetBoot::Pxe,
            bmc: BmcKind::Openipmi,
        }
    }

    #[test]
    fn a_node_with_both_firmwares_boots_the_mode_its_bmc_chose_on_the_same_hardware() {
        let tmp = std::env::temp_dir().join(format!("ferric-lab-both-{}", std::process::id()));
        let mut rack = rack(node(Firmware::Both, DiskBus::Virtio, 512));
        rack.dir = tmp.clone();
        rack.nodes[0].bmc = BmcKind::Ferric;
        let n = rack.nodes[0].clone();
        let dir = rack.node_dir(&n);
        std::fs::create_dir_all(&dir).unwrap();
        let nic = "e1000,netdev=n0,mac=52:54:00:00:00:00,romfile=/usr/lib/ipxe/qemu/efi-e1000.rom,id=nic0";
        // UEFI until the BMC says otherwise.
        assert_eq!(boot_mode(&rack, &n), Firmware::Uefi);
        let a = node_args(&rack, &n, &dir, true, None).unwrap();
        assert_eq!(pair(&a, "-machine"), ["q35"]);
        assert!(pair(&a, "-drive").iter().any(|d| d.contains("OVMF_CODE")));
        assert!(pair(&a, "-device").contains(&format!("{nic},bootindex=1").as_str()));
        // The Ferric BMC has no in-band interface.
        assert!(!pair(&a, "-device").iter().any(|d| d.contains("ipmi")));
        std::fs::write(dir.join("mode"), "bios").unwrap();
        assert_eq!(boot_mode(&rack, &n), Firmware::Bios);
        let a = node_args(&rack, &n, &dir, true, None).unwrap();
        assert_eq!(pair(&a, "-machine"), ["q35"]);
        assert!(!pair(&a, "-drive").iter().any(|d| d.contains("OVMF")));
        assert!(pair(&a, "-device").contains(&nic));
        assert_eq!(pair(&a, "-boot"), ["order=n"]);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_bios_node_boots_as_its_bmc_says_with_ipmi_e1000_and_its_consoles() {
        let rack = rack(node(Firmware::Bios, DiskBus::Virtio, 512));
        let n = &rack.nodes[0];
        let dir = rack.node_dir(n);
        let a = node_args(&rack, n, &dir, true, None).unwrap();
        assert_eq!(pair(&a, "-machine"), ["pc"]);
        assert_eq!(pair(&a, "-accel"), ["tcg"]);
        assert_eq!(pair(&a, "-m"), ["256"]);
        assert_eq!(pair(&a, "-boot"), ["order=n"]);
        assert_eq!(
            pair(&a, "-drive"),
            ["file=/lab/r/r-n0/disk.img,format=raw,if=none,id=disk0"]
        );
        assert_eq!(
            pair(&a, "-device"),
            [
                "isa-debugcon,iobase=0x402,chardev=fw",
                "virtio-blk-pci,drive=disk0,logical_block_size=512,physical_block_size=512",
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
        assert!(pair(&a, "-fw_cfg").is_empty());
        assert_eq!(a.last().map(String::as_str), Some("-daemonize"));

        let rules = dir.join("blkdebug.conf");
        let a = node_args(&rack, n, &dir, false, Some(&rules)).unwrap();
        assert_eq!(pair(&a, "-boot"), ["order=c"]);
        assert_eq!(
            pair(&a, "-drive"),
            [
                "file=blkdebug:/lab/r/r-n0/blkdebug.conf:/lab/r/r-n0/disk.img,format=raw,if=none,id=disk0"
            ]
        );
    }

    #[test]
    fn a_uefi_node_has_ovmf_its_own_nvram_and_network_boot_by_bootindex() {
        let mut rack = rack(node(Firmware::Uefi, DiskBus::Nvme, 4096));
        let n = rack.nodes[0].clone();
        let dir = rack.node_dir(&n);
        let a = node_args(&rack, &n, &dir, true, None).unwrap();
        assert_eq!(pair(&a, "-machine"), ["q35"]);
        assert_eq!(
            pair(&a, "-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,format=raw,unit=1,file=/lab/r.nvram/r-n0.fd",
                "file=/lab/r/r-n0/disk.img,format=raw,if=none,id=disk0"
            ]
        );
        let devices = pair(&a, "-device");
        assert!(devices.contains(
            &"nvme,drive=disk0,serial=r-n0,logical_block_size=4096,physical_block_size=4096"
        ));
        // The firmware's own NIC driver, and network boot first.
        assert!(devices.contains(
            &"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:00,romfile=,id=nic0,bootindex=1"
        ));
        assert!(pair(&a, "-boot").is_empty());
        // From the disk: no boot order from QEMU, the NVRAM's decides.
        let a = node_args(&rack, &n, &dir, false, None).unwrap();
        assert!(
            pair(&a, "-device")
                .contains(&"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:00,romfile=,id=nic0")
        );
        assert!(pair(&a, "-fw_cfg").is_empty());
        // HTTP boot only: the firmware's PXE is off.
        rack.nodes[0].netboot = NetBoot::Http;
        let a = node_args(&rack, &rack.nodes[0], &dir, true, None).unwrap();
        assert_eq!(
            pair(&a, "-fw_cfg"),
            [
                "name=opt/org.tianocore/IPv4PXESupport,string=no",
                "name=opt/org.tianocore/IPv6PXESupport,string=no"
            ]
        );
    }

    #[test]
    fn disks_are_virtio_nvme_or_sata_of_512_or_4096_byte_sectors() {
        let d = |bus, sector| disk_device(&node(Firmware::Bios, bus, sector));
        assert_eq!(
            d(DiskBus::Sata, 512).unwrap(),
            "ide-hd,drive=disk0,bus=ide.0"
        );
        assert_eq!(
            d(DiskBus::Virtio, 4096).unwrap(),
            "virtio-blk-pci,drive=disk0,logical_block_size=4096,physical_block_size=4096"
        );
        let e = d(DiskBus::Sata, 4096).unwrap_err().to_string();
        assert!(e.contains("512-byte sectors"), "{e}");
        let e = d(DiskBus::Nvme, 1024).unwrap_err().to_string();
        assert!(e.contains("1024 bytes"), "{e}");
    }
}
