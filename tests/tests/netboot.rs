//! Tier 4: a lab node network-boots Ferric's own ramdisk. Its BMC powers it on with boot
//! device pxe; its iPXE ROM gets an address and its script from the coordinator's DHCP and
//! HTTP (or, in proxy mode, the address from a dnsmasq beside it), loads the ramdisk's kernel
//! and initramfs, and the ramdisk connects back with its per-boot token and reports an
//! inspection that matches the virtual machine: one vCPU, its memory, its disk, its NIC's MAC,
//! its BMC's LAN address. UEFI nodes do the same with their firmware's own PXE (which gets
//! `snponly.efi`) or UEFI HTTP boot, and their inspection says they booted by UEFI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::{BootConfig, DhcpMode};
use ferric_lab::{Rack, UpOptions};
use ferric_tests::cli_ok;
use std::process::Command;
use std::time::Duration;

const MEMORY_MIB: u64 = 512;

const DISK: u64 = 96 << 20;

/// A rack that is taken down when dropped.
struct RackGuard(Rack);

impl Drop for RackGuard {
    fn drop(&mut self) {
        let _ = ferric_lab::down(&self.0.dir);
    }
}

fn rack(root: &std::path::Path, name: &str) -> RackGuard {
    RackGuard(
        ferric_lab::up(&UpOptions {
            name: name.to_owned(),
            dir: root.join(name),
            nodes: 1,
            memory_mib: MEMORY_MIB,
            disk_bytes: DISK,
            accel: "tcg".into(),
            ferric: ferric_tests::bin("ferric").unwrap(),
            // The small MBR test image boots with SYSLINUX: BIOS.
            firmware: vec![ferric_lab::Firmware::Bios],
            disk_bus: Vec::new(),
            sector_size: Vec::new(),
            netboot: Vec::new(),
            bmc: Vec::new(),
        })
        .unwrap(),
    )
}

/// Boots the rack's node through the coordinator and checks what its ramdisk reports.
async fn boot_and_inspect(rack: &Rack, dhcp: DhcpMode, dir: &std::path::Path) {
    ferric_tests::init_tracing();
    let ramdisk = ferric_tests::ramdisk::image().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&dir.join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ramdisk);
    boot.dhcp = dhcp;
    boot.http_port = 0;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, dir, IpmiClient::default(), None)
        .await
        .unwrap();
    let n = &rack.nodes[0];
    ferric_tests::enroll_lab_node(api, rack, n).await.unwrap();
    cli_ok(api, &["node", "power", "on", &n.name]).await;

    let c = ferric_tests::client(api);
    let console = rack.node_dir(n).join("console.log");
    let detail: serde_json::Value = ferric_tests::wait_for(
        Duration::from_secs(240),
        "the ramdisk's inspection",
        || async {
            let d: serde_json::Value = c.get(&format!("/v1/nodes/{}", n.name)).await?;
            Ok((!d["inspection"].is_null()).then_some(d))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nconsole:\n{}\ndnsmasq:\n{}\nnode: {}",
            std::fs::read_to_string(&console).unwrap_or_default(),
            std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default(),
            serde_json::to_string(&ferric_lab::status(rack)).unwrap_or_default()
        )
    });
    let inv = &detail["inspection"]["inventory"];
    assert_eq!(inv["cpu"]["count"], 1, "{inv}");
    let mem = inv["memory_bytes"].as_u64().unwrap();
    assert!(
        ((MEMORY_MIB << 20) * 8 / 10..=MEMORY_MIB << 20).contains(&mem),
        "memory {mem} of a {MEMORY_MIB} MiB machine"
    );
    let disks = inv["disks"].as_array().unwrap();
    assert!(
        disks
            .iter()
            .any(|d| d["name"] == "vda" && d["size_bytes"] == DISK),
        "{disks:?}"
    );
    let nics = inv["nics"].as_array().unwrap();
    assert!(nics.iter().any(|x| x["mac"] == n.mac.as_str()), "{nics:?}");
    // The BMC's LAN address as the node reads it in-band, and as ipmitool reads it over the LAN.
    let lan = Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            &n.bmc_ip,
            "-U",
            ferric_lab::BMC_USER,
        ])
        .args(["-P", &rack.bmc_password, "lan", "print", "1"])
        .output()
        .unwrap();
    let lan = String::from_utf8_lossy(&lan.stdout);
    let ip = lan
        .lines()
        .find_map(|l| l.strip_prefix("IP Address              : "))
        .unwrap_or_else(|| panic!("{lan}"))
        .trim()
        .to_owned();
    assert_eq!(detail["inspection"]["bmc"]["ip"], ip.as_str(), "{detail}");
    // The ramdisk is connected as the node, and the console shows its stages.
    assert_eq!(detail["node"]["connected"], true, "{detail}");
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains(&format!("FERRIC-RAMDISK-ENROLLED {}", n.name)),
        "{text}"
    );
    // `node show` prints it.
    let shown = cli_ok(api, &["node", "show", &n.name]).await;
    assert!(
        shown.contains("inspected:") && shown.contains(&n.mac),
        "{shown}"
    );
    // The boot's stages, in order, as the boot services and the link saw them.
    let stages: Vec<&str> = detail["boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["stage"].as_str().unwrap())
        .collect();
    let first = |s: &str| {
        stages
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("no {s} in {stages:?}"))
    };
    let order = [
        "dhcp",
        "script",
        "kernel",
        "initramfs",
        "enrolled",
        "connected",
        "inspected",
    ]
    .map(first);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stages:?}");
    assert!(
        shown.contains("last boot:    dhcp +0.0s, script +"),
        "{shown}"
    );

    cli_ok(api, &["node", "power", "off", &n.name]).await;
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_node_boots_the_ramdisk_from_ferrics_dhcp_and_reports_its_hardware() {
    let tmp = tempfile::tempdir().unwrap();
    let r = rack(tmp.path(), &format!("b{}", std::process::id() % 100_000));
    boot_and_inspect(
        &r.0,
        DhcpMode::Full {
            range: None,
            router: None,
        },
        tmp.path(),
    )
    .await;
}

/// dnsmasq on the rack's provisioning bridge (inside its namespace), handing out addresses
/// and nothing else; killed when dropped.
struct Dnsmasq(std::process::Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(rack: &Rack, dir: &std::path::Path) -> Dnsmasq {
    let k = &rack.prov_host_ip();
    let net = k.trim_end_matches(".1");
    let ns = |args: &[&str]| {
        let st = Command::new("ip")
            .args(["-n", &rack.netns])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ns(&["addr", "add", &format!("{net}.2/24"), "dev", "prov0"]);
    let log = std::fs::File::create(dir.join("dnsmasq.log")).unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &rack.netns,
            "dnsmasq",
            "--keep-in-foreground",
        ])
        .args([
            "--port=0",
            "--no-resolv",
            "--no-hosts",
            "--interface=prov0",
            "--bind-interfaces",
            &format!("--dhcp-range={net}.50,{net}.99,255.255.255.0,1h"),
            &format!("--dhcp-leasefile={}", dir.join("leases").display()),
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            "--log-dhcp",
            "--log-facility=-",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Dnsmasq(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_proxy_mode_beside_a_dnsmasq_the_node_boots_and_is_inspected() {
    let tmp = tempfile::tempdir().unwrap();
    let r = rack(tmp.path(), &format!("p{}", std::process::id() % 100_000));
    let _dns = dnsmasq(&r.0, tmp.path());
    boot_and_inspect(&r.0, DhcpMode::Proxy, tmp.path()).await;
    // The address came from dnsmasq's range, not from Ferric.
    let leases = std::fs::read_to_string(tmp.path().join("leases")).unwrap();
    assert!(
        leases.contains(&r.0.nodes[0].mac),
        "dnsmasq leased no address to the node: {leases}"
    );
}

/// Two UEFI nodes (OVMF, the firmware's own network stack on a virtio NIC): one boots by PXE
/// (TFTP `snponly.efi`, an NVMe disk of 4096-byte sectors), one by UEFI HTTP boot (its PXE
/// off; `http://…/boot/snponly.efi`). Both reach the ramdisk, whose kernel the EFI stub
/// starts with its initramfs, and their inspections say UEFI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_nodes_boot_the_ramdisk_by_pxe_and_by_http_and_inspection_says_uefi() {
    ferric_tests::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("f{}", std::process::id() % 100_000);
    let rack = RackGuard(
        ferric_lab::up(&UpOptions {
            name: name.clone(),
            dir: tmp.path().join(&name),
            nodes: 2,
            memory_mib: MEMORY_MIB,
            disk_bytes: DISK,
            accel: "tcg".into(),
            ferric: ferric_tests::bin("ferric").unwrap(),
            firmware: vec![ferric_lab::Firmware::Uefi],
            disk_bus: vec![ferric_lab::DiskBus::Nvme, ferric_lab::DiskBus::Virtio],
            sector_size: vec![4096, 512],
            netboot: vec![ferric_lab::NetBoot::Pxe, ferric_lab::NetBoot::Http],
            bmc: Vec::new(),
        })
        .unwrap(),
    );
    let rack = &rack.0;
    let ramdisk = ferric_tests::ramdisk::image().unwrap();
    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ramdisk);
    boot.http_port = 0;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();
    for n in &rack.nodes {
        ferric_tests::enroll_lab_node(api, rack, n).await.unwrap();
        cli_ok(api, &["node", "power", "on", &n.name]).await;
    }
    let c = ferric_tests::client(api);
    let firmware_got = [
        // The firmware's own PXE client, handed iPXE for its own NIC driver over TFTP.
        "NBP filename is snponly.efi",
        // UEFI HTTP boot, handed an absolute URL.
        "/boot/snponly.efi",
    ];
    for ((n, disk), got) in rack.nodes.iter().zip(["nvme0n1", "vda"]).zip(firmware_got) {
        let console = rack.node_dir(n).join("console.log");
        let d: serde_json::Value = ferric_tests::wait_for(
            Duration::from_secs(300),
            "the ramdisk's inspection",
            || async {
                let d: serde_json::Value = c.get(&format!("/v1/nodes/{}", n.name)).await?;
                Ok((!d["inspection"].is_null()).then_some(d))
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}\nconsole:\n{}",
                n.name,
                std::fs::read_to_string(&console).unwrap_or_default()
            )
        });
        let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap()).into_owned();
        assert!(
            text.contains(got),
            "{}: no `{got}` on the console:\n{text}",
            n.name
        );
        assert!(
            text.contains("using SNP on"),
            "iPXE is not snponly.efi:\n{text}"
        );
        assert_eq!(d["inspection"]["boot_mode"], "uefi", "{d}");
        assert_eq!(d["bmc"]["boot_mode"], "uefi", "{d}");
        assert!(d["bmc"]["boot_mode_seen_at_ms"].is_i64(), "{d}");
        let disks = d["inspection"]["inventory"]["disks"].as_array().unwrap();
        assert!(
            disks
                .iter()
                .any(|x| x["name"] == disk && x["size_bytes"] == DISK),
            "{disks:?}"
        );
        let stages: Vec<&str> = d["boot"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["stage"].as_str().unwrap())
            .collect();
        for s in [
            "dhcp",
            "script",
            "kernel",
            "initramfs",
            "connected",
            "inspected",
        ] {
            assert!(stages.contains(&s), "{}: no {s} in {stages:?}", n.name);
        }
        let shown = cli_ok(api, &["node", "show", &n.name]).await;
        assert!(
            shown.contains("boot:         uefi (seen by inspection"),
            "{shown}"
        );
    }
    for n in &rack.nodes {
        cli_ok(api, &["node", "power", "off", &n.name]).await;
    }
    agent.stop().await.unwrap();
    coord.shutdown().await;
}
