//! Tier 4: a lab rack of three virtual bare-metal nodes built by `ferric lab up`, driven only
//! through its BMCs with `ipmitool -I lanplus` — PXE and disk boots, power, faults — and
//! `ferric lab down` leaving nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Lab {
    root: PathBuf,
    name: String,
}

impl Lab {
    fn ferric(&self, args: &[&str]) -> std::process::Output {
        Command::new(ferric_tests::bin("ferric").unwrap())
            .args(["lab", "--root"])
            .arg(&self.root)
            .args(["--name", &self.name])
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ferric(args);
        assert!(
            out.status.success(),
            "ferric lab {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn rack(&self) -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.root.join(&self.name).join("rack.json")).unwrap(),
        )
        .unwrap()
    }
    fn status(&self, node: &str) -> serde_json::Value {
        let all: serde_json::Value =
            serde_json::from_str(&self.ok(&["-o", "json", "status"])).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap()
            .clone()
    }
    /// `ipmitool -I lanplus` against a node's BMC.
    fn ipmitool(&self, node: u32, args: &[&str]) -> Result<String, String> {
        let rack = self.rack();
        let n = &rack["nodes"][node as usize];
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-N", "1", "-R", "2", "-H"])
            .arg(n["bmc_ip"].as_str().unwrap())
            .args(["-U", "admin", "-P", rack["bmc_password"].as_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
    /// What `ipmitool chassis power status` says of a node.
    fn power_status(&self, node: u32) -> Result<String, String> {
        self.ipmitool(node, &["chassis", "power", "status"])
    }
    fn node_dir(&self, node: u32) -> PathBuf {
        self.root
            .join(&self.name)
            .join(format!("{}-n{node}", self.name))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.root.join(&self.name).join("rack.json").exists() {
            let _ = self.ferric(&["down"]);
        }
    }
}

fn wait<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (a minute at most) until the file `log` holds `needle`.
fn wait_log(log: &Path, needle: &str, what: &str) {
    wait(Duration::from_secs(60), what, || {
        std::fs::read_to_string(log)
            .ok()
            .filter(|c| c.contains(needle))
    });
}

/// What a node's DHCP request said of itself.
#[derive(Debug)]
struct DhcpSeen {
    /// Option 53.
    msg_type: u8,
    /// Option 93, the client's architecture (0 BIOS, 7 x86-64 UEFI, 16 UEFI HTTP).
    arch: Option<u16>,
    /// Option 60 (`PXEClient:Arch:00007:…`, `HTTPClient:…`).
    class: Option<String>,
}

/// Waits (in a thread, inside the rack's namespace) for a DHCP request from `mac`.
fn dhcp_request_from(
    netns: &str,
    mac: &str,
    limit: Duration,
) -> std::thread::JoinHandle<Result<DhcpSeen, String>> {
    let all = dhcp_requests_from(netns, &[mac], limit);
    std::thread::spawn(move || {
        all.join()
            .map_err(|_| "the DHCP listener panicked".to_owned())?
            .map(|mut v| v.remove(0))
    })
}

/// Waits (in a thread, inside the rack's namespace) for a DHCP request from each of `macs`:
/// the first of each, in the order of `macs`.
fn dhcp_requests_from(
    netns: &str,
    macs: &[&str],
    limit: Duration,
) -> std::thread::JoinHandle<Result<Vec<DhcpSeen>, String>> {
    let netns = netns.to_owned();
    let macs: Vec<Vec<u8>> = macs
        .iter()
        .map(|m| {
            m.split(':')
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect()
        })
        .collect();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(Path::new("/var/run/netns").join(&netns))
            .map_err(|e| e.to_string())?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let sock = UdpSocket::bind("0.0.0.0:67").map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1500];
        let mut found: Vec<Option<DhcpSeen>> = macs.iter().map(|_| None).collect();
        while started.elapsed() < limit && found.iter().any(Option::is_none) {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let p = &buf[..n];
            // BOOTREQUEST from one of the clients' hardware addresses, with the magic cookie.
            let Some(k) = macs.iter().position(|m| n > 240 && p[28..34] == m[..]) else {
                continue;
            };
            if p[0] != 1 || p[236..240] != [99, 130, 83, 99] || found[k].is_some() {
                continue;
            }
            let mut seen = DhcpSeen {
                msg_type: 0,
                arch: None,
                class: None,
            };
            let mut i = 240;
            while i + 1 < n && p[i] != 255 {
                let len = usize::from(p[i + 1]);
                let Some(v) = p.get(i + 2..i + 2 + len) else {
                    break;
                };
                match p[i] {
                    53 if len == 1 => seen.msg_type = v[0],
                    93 if len >= 2 => seen.arch = Some(u16::from_be_bytes([v[0], v[1]])),
                    60 => seen.class = Some(String::from_utf8_lossy(v).into_owned()),
                    _ => {}
                }
                i += 2 + len;
            }
            if seen.msg_type != 0 {
                found[k] = Some(seen);
            }
        }
        found
            .into_iter()
            .zip(&macs)
            .map(|(f, m)| {
                f.ok_or_else(|| format!("no DHCP request from {m:02x?} within {limit:?}"))
            })
            .collect()
    })
}

/// Waits for a router advertisement on the rack's provisioning bridge (captured from the
/// wire inside its namespace); its prefix-information option.
fn router_advertisement(netns: &str, limit: Duration) -> Result<Vec<u8>, String> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, socket,
    };
    use std::os::fd::AsRawFd;
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(Path::new("/var/run/netns").join(&netns))
            .map_err(|e| e.to_string())?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK,
            SockProtocol::EthAll,
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut f = [0u8; 1600];
        while started.elapsed() < limit {
            match recv(fd.as_raw_fd(), &mut f, MsgFlags::empty()) {
                // Ethernet, IPv6, next header ICMPv6, hop limit 255, type 134.
                Ok(n)
                    if n >= 102
                        && f[12..14] == [0x86, 0xdd]
                        && f[20] == 58
                        && f[21] == 255
                        && f[54] == 134 =>
                {
                    return Ok(f[70..102].to_vec());
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Err(format!("no router advertisement within {limit:?}"))
    })
    .join()
    .unwrap()
}

/// A boot sector that writes `FERRIC-DISK-BOOT` to the first serial port and halts.
fn boot_sector() -> Vec<u8> {
    let mut s = vec![
        0xfa, // cli
        0x31, 0xc0, // xor ax,ax
        0x8e, 0xd8, // mov ds,ax
        0xbe, 0x16, 0x7c, // mov si,0x7c16 (the message)
        0xba, 0xf8, 0x03, // mov dx,0x3f8
        0xac, // lodsb
        0x84, 0xc0, // test al,al
        0x74, 0x03, // jz +3
        0xee, // out dx,al
        0xeb, 0xf8, // jmp back to lodsb
        0xf4, // hlt
        0xeb, 0xfd, // jmp back to hlt
    ];
    s.extend_from_slice(b"FERRIC-DISK-BOOT\r\n\0");
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xaa]);
    s
}

fn leftovers(name: &str, root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let netns = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if netns.contains(&format!("ferric-{name}")) {
        found.push(format!("namespace ferric-{name}"));
    }
    for v in [format!("flm-{name}"), format!("flp-{name}")] {
        if Path::new("/sys/class/net").join(&v).exists() {
            found.push(format!("link {v}"));
        }
    }
    let dir = root.join(name).display().to_string();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(&dir)
        {
            found.push(format!("process {}", p.file_name().to_string_lossy()));
        }
    }
    if root.join(name).exists() {
        found.push(format!("directory {dir}"));
    }
    found
}

#[test]
fn a_three_node_rack_boots_from_pxe_and_disk_through_its_bmcs_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab {
        root: tmp.path().to_owned(),
        name: format!("t{}", std::process::id() % 100_000),
    };
    let up = lab.ok(&[
        "up",
        "--nodes",
        "3",
        "--memory",
        "256M",
        "--disk",
        "64M",
        "--accel",
        "tcg",
        "--firmware",
        "bios",
    ]);
    assert!(up.contains("3 nodes"), "{up}");
    let rack = lab.rack();
    let netns = rack["netns"].as_str().unwrap().to_owned();
    for i in 0..3 {
        assert!(lab.power_status(i).unwrap().contains("is off"));
    }
    // Router advertisements on the provisioning bridge: a /64 unique-local prefix, on-link and
    // autonomous (iPXE's IPv6 autoconfiguration finishes instead of waiting for a router).
    let prefix =
        router_advertisement(rack["netns"].as_str().unwrap(), Duration::from_secs(10)).unwrap();
    assert_eq!(
        (prefix[0], prefix[1], prefix[2], prefix[3] & 0xc0),
        (3, 4, 64, 0xc0)
    );
    assert_eq!(&prefix[16..20], &[0xfd, 0x00, 0x00, 0xfe]);

    // PXE: the BMC powers node 0 on with boot device pxe; its iPXE asks for an address on the
    // provisioning bridge.
    let mac0 = rack["nodes"][0]["mac"].as_str().unwrap().to_owned();
    let dhcp = dhcp_request_from(&netns, &mac0, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(300));
    lab.ipmitool(0, &["chassis", "bootdev", "pxe"]).unwrap();
    lab.ipmitool(0, &["chassis", "power", "on"]).unwrap();
    assert!(lab.power_status(0).unwrap().contains("is on"));
    assert_eq!(lab.status(&format!("{}-n0", lab.name))["power"], "on");
    let seen = dhcp.join().unwrap().unwrap();
    assert!(
        seen.msg_type == 1 || seen.msg_type == 3,
        "DHCP message type {}",
        seen.msg_type
    );
    // The iPXE of its option ROM, on a BIOS: architecture 0.
    assert_eq!(seen.arch, Some(0), "{seen:?}");

    // Disk: node 1's disk holds a boot sector; set to boot from disk, it prints its marker.
    let disk = lab.node_dir(1).join("disk.img");
    let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::io::Write::write_all(&mut f, &boot_sector()).unwrap();
    drop(f);
    lab.ipmitool(1, &["chassis", "bootdev", "disk"]).unwrap();
    lab.ipmitool(1, &["chassis", "power", "on"]).unwrap();
    let console = lab.node_dir(1).join("console.log");
    wait_log(
        &console,
        "FERRIC-DISK-BOOT",
        "the disk's marker on the console",
    );
    let shown = lab.ok(&["console", &format!("{}-n1", lab.name)]);
    assert!(shown.contains("FERRIC-DISK-BOOT"), "{shown}");

    // Power off stops the machine.
    let pid: i32 = std::fs::read_to_string(lab.node_dir(1).join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    lab.ipmitool(1, &["chassis", "power", "off"]).unwrap();
    assert!(lab.power_status(1).unwrap().contains("is off"));
    wait(Duration::from_secs(10), "QEMU to exit", || {
        (!Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")))
        .then_some(())
    });

    // disk-fail: the same disk can no longer be read by the firmware.
    let n1 = format!("{}-n1", lab.name);
    lab.ok(&["fault", &n1, "disk-fail"]);
    std::fs::write(&console, "").unwrap();
    lab.ipmitool(1, &["chassis", "power", "on"]).unwrap();
    let fw = lab.node_dir(1).join("firmware.log");
    wait_log(
        &fw,
        "could not read the boot disk",
        "the firmware to fail reading the disk",
    );
    assert!(
        !std::fs::read_to_string(&console)
            .unwrap()
            .contains("FERRIC-DISK-BOOT")
    );
    lab.ipmitool(1, &["chassis", "power", "off"]).unwrap();
    lab.ok(&["fault", &n1, "clear"]);

    // power-stuck: the BMC takes the command, the machine stays off.
    let n2 = format!("{}-n2", lab.name);
    lab.ok(&["fault", &n2, "power-stuck"]);
    let _ = lab.ipmitool(2, &["chassis", "power", "on"]);
    assert!(lab.power_status(2).unwrap().contains("is off"));
    assert_eq!(lab.status(&n2)["faults"][0], "power-stuck");
    lab.ok(&["fault", &n2, "clear"]);
    lab.ipmitool(2, &["chassis", "power", "on"]).unwrap();
    assert!(lab.power_status(2).unwrap().contains("is on"));

    // bmc-silent: no answer at all, until cleared.
    lab.ok(&["fault", &n2, "bmc-silent"]);
    let e = lab.power_status(2).unwrap_err();
    assert!(!e.is_empty());
    lab.ok(&["fault", &n2, "clear"]);
    assert!(lab.power_status(2).unwrap().contains("is on"));

    // bmc-loss: the rack's relay drops that share of datagrams; at 100% nothing arrives.
    lab.ok(&["fault", &n2, "bmc-loss", "100"]);
    std::thread::sleep(Duration::from_millis(700)); // the relay re-reads faults twice a second
    assert!(lab.power_status(2).is_err());
    assert!(lab.power_status(1).is_ok(), "other BMCs unaffected");
    lab.ok(&["fault", &n2, "clear"]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(lab.power_status(2).unwrap().contains("is on"));

    let status = lab.ok(&["status"]);
    assert!(
        status.contains(&format!("{}-n0", lab.name)) && status.contains(&mac0),
        "{status}"
    );

    // Down removes every process, the namespace, its links and the files.
    lab.ok(&["down"]);
    assert_eq!(leftovers(&lab.name, &lab.root), Vec::<String>::new());
}

/// A UEFI rack (the default firmware): OVMF network-boots with its own PXE on its own NIC
/// driver (architecture 7, `PXEClient`) or, on a node whose PXE is off, with UEFI HTTP boot
/// (architecture 16, `HTTPClient`); disks are NVMe of 4096-byte sectors; each node's NVRAM
/// outlives `down` and is the one the rack of the same name boots with after `up`.
#[test]
fn a_uefi_rack_boots_from_its_firmware_and_keeps_its_nvram() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab {
        root: tmp.path().join("lab"),
        name: format!("u{}", std::process::id() % 100_000),
    };
    let up = [
        "up",
        "--nodes",
        "2",
        "--memory",
        "256M",
        "--disk",
        "64M",
        "--accel",
        "tcg",
        "--disk-bus",
        "nvme",
        "--sector-size",
        "4096",
        "--netboot",
        "pxe,http",
    ];
    lab.ok(&up);
    let (n0, n1) = (format!("{}-n0", lab.name), format!("{}-n1", lab.name));
    for n in [&n0, &n1] {
        let st = lab.status(n);
        assert_eq!(
            (&st["firmware"], &st["disk"]),
            (&"uefi".into(), &"nvme/4096".into())
        );
    }
    let rack = lab.rack();
    let netns = rack["netns"].as_str().unwrap().to_owned();
    let mac = |i: usize| rack["nodes"][i]["mac"].as_str().unwrap().to_owned();
    let seen = dhcp_requests_from(&netns, &[&mac(0), &mac(1)], Duration::from_secs(150));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..2 {
        lab.ipmitool(i, &["chassis", "bootdev", "pxe"]).unwrap();
        lab.ipmitool(i, &["chassis", "power", "on"]).unwrap();
    }
    let mut seen = seen.join().unwrap().unwrap();
    let (http, pxe) = (seen.pop().unwrap(), seen.pop().unwrap());
    assert_eq!(pxe.arch, Some(7), "{pxe:?}");
    assert!(
        pxe.class
            .as_deref()
            .is_some_and(|c| c.starts_with("PXEClient:Arch:00007")),
        "{pxe:?}"
    );
    assert_eq!(http.arch, Some(16), "{http:?}");
    assert!(
        http.class
            .as_deref()
            .is_some_and(|c| c.starts_with("HTTPClient")),
        "{http:?}"
    );
    for i in 0..2 {
        lab.ipmitool(i, &["chassis", "power", "off"]).unwrap();
    }
    // The firmware wrote its boot options into node 0's NVRAM, beside the rack's directory.
    let nvram = tmp
        .path()
        .join("lab")
        .join(format!("{}.nvram", lab.name))
        .join(format!("{n0}.fd"));
    let written = std::fs::read(&nvram).unwrap();
    assert_ne!(
        written,
        std::fs::read(ferric_lab::OVMF_VARS).unwrap(),
        "OVMF kept nothing in {}",
        nvram.display()
    );
    lab.ok(&["down"]);
    assert_eq!(leftovers(&lab.name, &lab.root), Vec::<String>::new());
    assert_eq!(
        std::fs::read(&nvram).unwrap(),
        written,
        "down keeps the NVRAM"
    );
    // The same rack again: the node starts with the NVRAM it had.
    lab.ok(&up);
    assert_eq!(std::fs::read(&nvram).unwrap(), written);
    lab.ipmitool(0, &["chassis", "power", "on"]).unwrap();
    let pid = std::fs::read_to_string(lab.node_dir(0).join("qemu.pid")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&format!("file={}", nvram.display())),
        "QEMU does not boot with {}",
        nvram.display()
    );
    lab.ok(&["down"]);
}

#[test]
fn down_after_a_crash_removes_what_the_rack_had_made() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab {
        root: tmp.path().to_owned(),
        name: format!("c{}", std::process::id() % 100_000),
    };
    lab.ok(&[
        "up",
        "--nodes",
        "2",
        "--memory",
        "128M",
        "--disk",
        "16M",
        "--accel",
        "tcg",
        "--firmware",
        "bios",
    ]);
    lab.ipmitool(0, &["chassis", "power", "on"]).unwrap();
    // The BMC processes and QEMU outlive the command that made them (as after a crash of the
    // lab process); down works from the rack's files alone.
    let before = leftovers(&lab.name, &lab.root);
    assert!(
        before.iter().any(|l| l.starts_with("namespace")),
        "{before:?}"
    );
    assert!(
        before.iter().filter(|l| l.starts_with("process")).count() >= 4,
        "two BMCs, the relay and a QEMU: {before:?}"
    );
    lab.ok(&["down"]);
    assert_eq!(leftovers(&lab.name, &lab.root), Vec::<String>::new());
    // And a second down says there is nothing.
    let out = lab.ferric(&["down"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rack"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_enroll_registers_the_nodes_and_the_coordinator_powers_them_through_an_agent() {
    use ferric_agent::bmc::ipmi::IpmiClient;
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab {
        root: tmp.path().join("lab"),
        name: format!("e{}", std::process::id() % 100_000),
    };
    lab.ok(&[
        "up",
        "--nodes",
        "2",
        "--memory",
        "128M",
        "--disk",
        "16M",
        "--accel",
        "tcg",
        "--firmware",
        "bios",
    ]);
    let coord = ferric_tests::start_coordinator(&tmp.path().join("coord"))
        .await
        .unwrap();
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();

    let api = ferric_tests::base_url(coord.api);
    let ca = ferric_tests::ca_file(coord.api).unwrap();
    let ferric = |args: Vec<String>| {
        let api = api.clone();
        let ca = ca.clone();
        let root = lab.root.clone();
        let name = lab.name.clone();
        let token = ferric_tests::admin_token(coord.api).unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            Command::new(ferric_tests::bin("ferric").unwrap())
                .env("FERRIC_API", &api)
                .env("FERRIC_CA", &ca)
                .env("FERRIC_TOKEN", &token)
                .env("FERRIC_CONFIG", "/dev/null")
                .env("FERRIC_LAB_ROOT", &root)
                .args(&args)
                .args(if args[0] == "lab" {
                    vec!["--name".to_owned(), name]
                } else {
                    vec![]
                })
                .output()
                .unwrap()
        })
    };
    // Runs `ferric ARGS…`, which must succeed; returns its output.
    let ok = |args: &[&str]| {
        let what = args.join(" ");
        let run = ferric(args.iter().map(|a| (*a).to_owned()).collect());
        async move {
            let out = run.await.unwrap();
            assert!(
                out.status.success(),
                "ferric {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    ok(&["lab", "enroll", "--via", "mgmt"]).await;
    let n0 = format!("{}-n0", lab.name);
    let shown: serde_json::Value = ferric_tests::client(coord.api)
        .get(&format!("/v1/nodes/{n0}"))
        .await
        .unwrap();
    assert_eq!(
        shown["bmc"]["macs"][0],
        lab.rack()["nodes"][0]["mac"],
        "{shown}"
    );

    // The coordinator powers the node on through the agent, the lab BMC starts its machine.
    assert_eq!(
        ok(&["node", "power", "on", &n0]).await,
        format!("node {n0}: power on")
    );
    assert_eq!(lab.status(&n0)["power"], "on");
    ok(&["node", "power", "off", &n0]).await;
    assert_eq!(lab.status(&n0)["power"], "off");

    // A lossy management network: the rack's relay drops 30% of n1's datagrams each way, and
    // its BMC, like real ones, holds at most 4 sessions for the user. Power operations
    // through the coordinator and Ferric's own client still succeed, each read back from the
    // lab's chassis.
    let conf = std::fs::read_to_string(lab.node_dir(1).join("lan.conf")).unwrap();
    assert!(
        conf.lines()
            .any(|l| l.trim_start().starts_with("user 2 true") && l.contains(" admin 4 ")),
        "{conf}"
    );
    let n1 = format!("{}-n1", lab.name);
    ok(&["lab", "fault", &n1, "bmc-loss", "30"]).await;
    assert_eq!(lab.status(&n1)["faults"][0], "bmc-loss 30");
    std::thread::sleep(Duration::from_millis(700)); // the relay re-reads faults twice a second
    for (action, power) in [
        ("status", "off"),
        ("on", "on"),
        ("status", "on"),
        ("off", "off"),
        ("on", "on"),
        ("off", "off"),
        ("status", "off"),
    ] {
        assert_eq!(
            ok(&["node", "power", action, &n1]).await,
            format!("node {n1}: power {power}"),
            "power {action} at 30% loss"
        );
        assert_eq!(lab.status(&n1)["power"], power, "after power {action}");
    }

    agent.stop().await.unwrap();
    coord.shutdown().await;
}
