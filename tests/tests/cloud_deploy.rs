//! Tier 4: a real cloud image (Debian 12 with cloud-init, built from the archive) deployed
//! to the servers of today and of yesterday on one lab rack: a UEFI node with an NVMe disk of
//! 4096-byte sectors and a BIOS node with a virtio disk of 512-byte sectors. Each gets a
//! static network from `ferric node port` (untagged, and on a VLAN between the two) in a
//! config drive of each layout (config-2 on one, NoCloud on the other), boots its OS
//! from its own disk to a login prompt, and is reached over SSH with the deploy's key: its
//! host name, its addresses and a root file system grown to the disk are the ones asked
//! for. The UEFI node is then taken back and deployed again, and its firmware holds as many
//! boot entries as after the first deploy (Ferric's own entry is reused, not added again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_lab::{DiskBus, Firmware, NetBoot, Rack, UpOptions};
use ferric_tests::cli_ok;
use ferric_tests::rack::RackGuard;
use std::path::Path;
use std::time::Duration;

const MEMORY_MIB: u64 = 1024;
const DISK: u64 = 4 << 30;
const VLAN: u16 = 100;

async fn wait_state(api: std::net::SocketAddr, rack: &Rack, names: &[&str], state: &str) {
    ferric_tests::rack::wait_state(api, rack, names, state)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Runs `command` on `address` as the image's user with `key`, from inside the rack's network
/// namespace (on its provisioning bridge); its output once it answers.
async fn ssh(address: &str, key: &Path, command: &str, rack: &Rack) -> String {
    ferric_tests::wait_for(
        Duration::from_secs(300),
        &format!("SSH to {address}"),
        || async {
            let o = ferric_tests::cloud_image::ssh_from(Some(&rack.netns), key, address, command)
                .output()
                .await?;
            Ok(o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).into_owned()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", ferric_tests::rack::console_tails(rack)))
}

/// What the OS on `address` says of itself: host name, addresses, root size, boot entries.
const ABOUT: &str = "hostname; ip -o addr show; echo ROOT $(findmnt -bno SIZE /); \
     if [ -d /sys/firmware/efi/efivars ]; then \
       echo BOOT-ENTRIES $(ls /sys/firmware/efi/efivars | grep -c '^Boot[0-9A-F]\\{4\\}-'); \
       cur=$(od -An -tx2 -j4 -N2 /sys/firmware/efi/efivars/BootCurrent-* | tr -d ' '); \
       echo BOOT-CURRENT $(tr -d '\\000' < /sys/firmware/efi/efivars/Boot$(echo $cur | tr a-f A-F)-* | tr -cd '[:print:]'); \
     else echo FIRMWARE bios; fi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_deploys_to_a_uefi_nvme_4k_node_and_a_bios_node_with_network_and_ssh() {
    ferric_tests::init_tracing();
    let image = ferric_tests::cloud_image::build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("c{}", std::process::id() % 100_000);
    let rack = RackGuard(
        ferric_lab::up(&UpOptions {
            name: name.clone(),
            dir: tmp.path().join(&name),
            nodes: 2,
            memory_mib: MEMORY_MIB,
            disk_bytes: DISK,
            accel: "tcg".into(),
            ferric: ferric_tests::bin("ferric").unwrap(),
            firmware: vec![Firmware::Uefi, Firmware::Bios],
            disk_bus: vec![DiskBus::Nvme, DiskBus::Virtio],
            sector_size: vec![4096, 512],
            netboot: vec![NetBoot::Pxe],
            bmc: Vec::new(),
        })
        .unwrap(),
    );
    let rack = &rack.0;
    let (uefi, bios) = (&rack.nodes[0], &rack.nodes[1]);
    // The deployed OS's own networks: the provisioning subnet untagged, and a VLAN on it
    // between the two nodes (the rack's bridge carries tagged frames; this host's kernel has
    // no 802.1Q to end them itself).
    let net = |host: u8| format!("10.248.{}.{host}", rack.subnet);
    let vlan_net = |host: u8| format!("10.249.{}.{host}", rack.subnet);
    // The test logs in from inside the rack's namespace, with an address on its bridge.
    let o = std::process::Command::new("ip")
        .args([
            "-n",
            &rack.netns,
            "addr",
            "add",
            &format!("{}/24", net(2)),
            "dev",
            "prov0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut cfg = ferric_tests::coordinator_config(&tmp.path().join("coord"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let mut boot = BootConfig::new(&rack.prov_veth(), ferric_tests::ramdisk::image().unwrap());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    cfg.lifecycle.callback = Duration::from_secs(300);
    let coord = ferric_tests::start(cfg).await.unwrap();
    let api = coord.api;
    let agent = ferric_tests::management_agent(&coord, tmp.path(), IpmiClient::default(), None)
        .await
        .unwrap();
    for n in &rack.nodes {
        ferric_tests::enroll_lab_node(api, rack, n).await.unwrap();
    }
    let up = cli_ok(
        api,
        &[
            "image",
            "upload",
            image.to_str().unwrap(),
            "--name",
            "debian-12",
        ],
    )
    .await;
    assert!(up.contains("qcow2"), "{up}");
    let names = [uefi.name.as_str(), bios.name.as_str()];
    for verb in ["manage", "inspect"] {
        let mut all = vec!["node", verb];
        all.extend(names);
        cli_ok(api, &all).await;
        wait_state(api, rack, &names, "manageable").await;
    }
    let mut all = vec!["node", "provide"];
    all.extend(names);
    cli_ok(api, &all).await;
    wait_state(api, rack, &names, "available").await;

    // Static networks, as an operator gives them.
    let gw = net(1);
    cli_ok(
        api,
        &[
            "node",
            "port",
            &uefi.name,
            &uefi.mac,
            "--address",
            &format!("{}/24", net(20)),
            "--vlan",
            &format!("{VLAN}={}/24", vlan_net(20)),
            "--gateway",
            &gw,
            "--dns",
            &gw,
        ],
    )
    .await;
    let shown = cli_ok(
        api,
        &[
            "node",
            "port",
            &bios.name,
            &bios.mac,
            "--address",
            &format!("{}/24", net(21)),
            "--vlan",
            &format!("{VLAN}={}/24", vlan_net(21)),
            "--gateway",
            &gw,
            "--dns",
            &gw,
            "--search",
            "lab.example",
        ],
    )
    .await;
    assert!(
        shown.contains(&format!("{}/24", net(21)))
            && shown.contains(&format!("route default via {gw}")),
        "{shown}"
    );
    let keys = tmp.path().join("deploy_key");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferric-test", "-f"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = keys.with_extension("pub");
    let public = public.to_str().unwrap();

    // Each layout read by cloud-init itself: the UEFI node's drive is OpenStack's config-2
    // (network_data.json), the BIOS node's NoCloud (network-config v2).
    let deploy = |node: &str, layout: &str| {
        let node = node.to_owned();
        let layout = layout.to_owned();
        async move {
            cli_ok(
                api,
                &[
                    "node",
                    "deploy",
                    &node,
                    "--image",
                    "debian-12",
                    "--ssh-key",
                    public,
                    "--config-drive-format",
                    &layout,
                ],
            )
            .await
        }
    };
    deploy(&uefi.name, "config-2").await;
    deploy(&bios.name, "nocloud").await;
    wait_state(api, rack, &names, "active").await;

    let uefi_addr = net(20);
    let about = ssh(&uefi_addr, &keys, ABOUT, rack).await;
    assert!(about.starts_with(&format!("{}\n", uefi.name)), "{about}");
    assert!(about.contains(&format!("inet {uefi_addr}/24")), "{about}");
    assert!(
        about.contains(&format!("inet {}/24", vlan_net(20))),
        "{about}"
    );
    assert!(grown(&about), "{about}");
    let entries = field(&about, "BOOT-ENTRIES");
    assert!(
        entries.parse::<u32>().is_ok_and(|n| n >= 1),
        "the firmware's boot entries are counted: {about}"
    );
    assert!(
        field(&about, "BOOT-CURRENT").contains("Ferric deployed OS"),
        "booted by Ferric's entry: {about}"
    );
    let about = ssh(&net(21), &keys, ABOUT, rack).await;
    assert!(about.starts_with(&format!("{}\n", bios.name)), "{about}");
    assert!(about.contains(&format!("inet {}/24", net(21))), "{about}");
    assert!(
        about.contains(&format!("inet {}/24", vlan_net(21))),
        "{about}"
    );
    assert!(about.contains("FIRMWARE bios"), "{about}");
    // Over the VLAN, one node reaches the other's SSH server.
    let banner = ssh(
        &net(21),
        &keys,
        &format!(
            "timeout 10 bash -c 'exec 3<>/dev/tcp/{}/22; head -c 8 <&3'",
            vlan_net(20)
        ),
        rack,
    )
    .await;
    assert!(banner.starts_with("SSH-2.0"), "{banner}");
    assert!(grown(&about), "{about}");
    let resolv = ssh(
        &net(21),
        &keys,
        "resolvectl status 2>/dev/null || cat /etc/resolv.conf",
        rack,
    )
    .await;
    assert!(
        resolv.contains(&gw) && resolv.contains("lab.example"),
        "{resolv}"
    );
    for (n, datasource) in rack
        .nodes
        .iter()
        .zip(["DataSourceConfigDrive", "DataSourceNoCloud"])
    {
        // cloud-init's last stage names the datasource it read; it ends after sshd is up.
        let console = ferric_tests::wait_for(
            Duration::from_secs(180),
            &format!("{} finishing cloud-init", n.name),
            || async {
                let c = ferric_tests::rack::console(rack, n);
                Ok(c.contains("Datasource DataSource").then_some(c))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", ferric_tests::rack::console(rack, n)));
        assert!(console.contains(&format!("{} login:", n.name)), "{console}");
        assert!(
            console.contains(&format!("Datasource {datasource}")),
            "{}: cloud-init read the drive's layout: {console}",
            n.name
        );
    }

    // Taken back and deployed again, the UEFI node's firmware holds no more boot entries.
    cli_ok(api, &["node", "undeploy", &uefi.name]).await;
    wait_state(api, rack, &names[..1], "available").await;
    deploy(&uefi.name, "config-2").await;
    wait_state(api, rack, &names[..1], "active").await;
    let again = ssh(&uefi_addr, &keys, ABOUT, rack).await;
    assert_eq!(field(&again, "BOOT-ENTRIES"), entries, "{again}");
    assert!(
        field(&again, "BOOT-CURRENT").contains("Ferric deployed OS"),
        "{again}"
    );

    let c = ferric_tests::client(api);
    for n in names.iter().chain(["mgmt"].iter()) {
        ferric_tests::rack::every_step_once(&c, n).await.unwrap();
    }
    agent.stop().await.unwrap();
    coord.shutdown().await;
}

/// The root file system grew from the image's 2 GiB toward the 4 GiB disk.
fn grown(about: &str) -> bool {
    field(about, "ROOT")
        .parse::<u64>()
        .is_ok_and(|b| b > 3 << 30)
}

/// The rest of the line that starts with `key `.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}
