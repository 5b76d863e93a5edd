//! Tier 4: the hypervisor paths this machine's kernel cannot take — LVM volumes (device-mapper)
//! and VLAN sub-interfaces (802.1Q) — on a host that has them: a virtual machine running
//! Debian's generic kernel over this machine's own files (see `ferric_tests::hostvm`), with a
//! real libvirtd, a real volume group on a loop device, and the real `ferric-agent` binary
//! linked over QUIC to a coordinator here. Everything is checked inside the VM with the
//! system's own tools (`lvs`, `virsh`, sysfs, `/proc/net/vlan`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_coordinator::client::Client;
use ferric_coordinator::conductor::nodes::NodeView;
use ferric_coordinator::conductor::plans::PlanFile;
use ferric_tests::hostvm::{HostVm, MAIL};
use ferric_tests::hv::{compressed_qcow2, marker_disk};
use ferric_tests::*;
use std::time::Duration;

const MIB: u64 = 1 << 20;

async fn apply(c: &Client, yaml: &str) -> serde_json::Value {
    let plan: PlanFile = serde_yaml_ng::from_str(yaml).unwrap();
    let p = c.apply(vec!["hvvm".into()], plan).await.unwrap()[0].id;
    // Under two levels of emulation a step may take seconds.
    wait_plan_finished(c, p, Duration::from_secs(180))
        .await
        .unwrap()
}

/// Applies a one-step plan, checks it succeeded, and returns whether the step changed anything.
async fn step(c: &Client, yaml: &str) -> bool {
    let s = apply(c, yaml).await;
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    s["events"][1]["kind"]["done"]["changed"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lvm_volumes_and_vlan_bridges_on_a_host_whose_kernel_has_them() {
    let (_dir, coord, c) = coordinator_in_tempdir().await;
    // The console and the agent's log stay in target/ so that a failure can be read afterwards.
    let vm_dir = ferric_tests::hv::target_dir()
        .unwrap()
        .join("hostvm-test")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&vm_dir);
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut vm = HostVm::boot(&vm_dir, 1024).await.unwrap();
    let t = Duration::from_secs(60);

    // The VM's kernel has what this machine's lacks.
    vm.exec(
        "grep -q device-mapper /proc/devices && test -e /proc/net/vlan/config",
        t,
    )
    .await
    .unwrap();

    // A volume group on a loop device, libvirtd (no udev here: LVM makes its own device
    // nodes), and the agent with an LVM pool over the group.
    vm.exec(
        "truncate -s 256M /var/tmp/pv.img && dev=$(losetup -f --show /var/tmp/pv.img) && \
         pvcreate -q $dev && vgcreate -q ferricvg $dev",
        t,
    )
    .await
    .unwrap();
    vm.exec(
        "export DM_DISABLE_UDEV=1; virtlogd -d && libvirtd -d && \
         for i in $(seq 240); do virsh -c qemu:///system version >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1",
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    let state = vm.mail().join("state");
    enroll_in_process(coord.api, coord.listen, "hvvm", &state)
        .await
        .unwrap();
    let agent = bin("ferric-agent").unwrap();
    let port = coord.listen.port();
    // Built before the agent in the VM first looks at its directory (`--allow-path`): the
    // VM's view of the shared root would keep the answer that it does not exist.
    let image = ferric_tests::hv::guest_image().unwrap();
    let guest_dir = image.kernel.parent().unwrap().display().to_string();
    vm.exec(
        &format!(
            "export DM_DISABLE_UDEV=1 RUST_LOG=info,quinn=warn; setsid {agent} --state-dir {MAIL}/state run \
             --coordinator {host}:{port} --driver libvirt --accel tcg --bmc-poll 0s \
             --pool default=/var/lib/ferric/pools/default --lvm-pool fast=ferricvg \
             --allow-path {MAIL} --allow-path {guest_dir} > {MAIL}/agent.log 2>&1 &",
            agent = agent.display(),
            host = HostVm::HOST,
            guest_dir = guest_dir,
        ),
        t,
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(180),
        "the agent in the VM to connect",
        || {
            let c = c.clone();
            async move {
                let nodes: Vec<NodeView> = c.get("/v1/nodes").await?;
                Ok(nodes
                    .iter()
                    .any(|n| n.name == "hvvm" && n.connected)
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; agent log:\n{}",
            std::fs::read_to_string(vm.mail().join("agent.log")).unwrap_or_default()
        )
    });

    // LVM: the agent defines the pool over the volume group and makes a logical volume; a
    // second run changes nothing; a bigger size grows it.
    let scratch = |size: u64| {
        format!("steps:\n  - ensure_volume: {{ pool: fast, name: scratch, size_bytes: {size} }}\n")
    };
    let delete =
        |name: &str| format!("steps:\n  - delete_volume: {{ pool: fast, name: {name} }}\n");
    assert!(step(&c, &scratch(8 * MIB)).await);
    let lv_size = "lvs --noheadings --nosuffix --units b -o lv_size ferricvg/scratch";
    assert_eq!(
        vm.exec(lv_size, t).await.unwrap().trim(),
        (8 * MIB).to_string()
    );
    let pool = vm
        .exec("virsh -c qemu:///system pool-dumpxml fast", t)
        .await
        .unwrap();
    assert!(
        pool.contains("type='logical'") && pool.contains("<name>ferricvg</name>"),
        "{pool}"
    );
    assert!(
        !step(&c, &scratch(8 * MIB)).await,
        "a second run changes nothing"
    );
    assert!(step(&c, &scratch(16 * MIB)).await, "a bigger size grows it");
    assert_eq!(
        vm.exec(lv_size, t).await.unwrap().trim(),
        (16 * MIB).to_string()
    );

    // A logical volume is carved from extents a deleted one may have filled: whatever Ferric
    // hands out reads as zeros, when made and when grown. The first 16 MiB of the group are
    // filled with 0xff and freed; the next volumes start there (checked), and hold no 0xff.
    let fill = |name: &str| {
        format!(
            "tr '\\000' '\\377' < /dev/zero | head -c $(blockdev --getsize64 /dev/ferricvg/{name}) > /dev/ferricvg/{name} && sync"
        )
    };
    let nonzero = |name: &str| format!("tr -d '\\000' < /dev/ferricvg/{name} | wc -c");
    let first_extent =
        |name: &str| format!("lvs --noheadings -o seg_pe_ranges ferricvg/{name} | grep -q ':0-'");
    vm.exec(&fill("scratch"), t).await.unwrap();
    assert_eq!(
        vm.exec(&nonzero("scratch"), t).await.unwrap().trim(),
        (16 * MIB).to_string()
    );
    assert!(step(&c, &delete("scratch")).await);
    assert!(step(&c, &scratch(4 * MIB)).await);
    vm.exec(&first_extent("scratch"), t).await.unwrap();
    assert_eq!(
        vm.exec(&nonzero("scratch"), t).await.unwrap().trim(),
        "0",
        "a new volume reads as zeros"
    );
    assert!(step(&c, &scratch(16 * MIB)).await);
    assert_eq!(
        vm.exec(&nonzero("scratch"), t).await.unwrap().trim(),
        "0",
        "a grown volume reads as zeros"
    );
    // A clearing cut short (the agent stopped, the step timed out) leaves its note in the
    // agent's state: the next run clears the volume again before it counts as made.
    vm.exec(&fill("scratch"), t).await.unwrap();
    let note = vm.mail().join("state/volume-images/fast/scratch.zeroing");
    std::fs::write(&note, "0").unwrap();
    assert!(
        step(&c, &scratch(16 * MIB)).await,
        "the clearing is done again"
    );
    assert_eq!(vm.exec(&nonzero("scratch"), t).await.unwrap().trim(), "0");
    assert!(!note.exists());
    assert!(!step(&c, &scratch(16 * MIB)).await);
    vm.exec(&fill("scratch"), t).await.unwrap();
    assert!(step(&c, &delete("scratch")).await);

    // A logical volume cloned from a (compressed qcow2) image in the coordinator's store: the
    // agent in the VM fetches it over HTTPS with its certificate and writes the disk bytes into the block device; the
    // zeros inside the disk and the 4 MiB past its end read as zeros, not as old 0xff.
    let img_dir = tempfile::tempdir().unwrap();
    // An LV in pool `fast` cloned from the stored image `sha256`, fetched from the
    // coordinator's store through the VM's user network.
    let api_port = coord.api.port();
    let clone_step = |name: &str, size: u64, sha256: &str, format: &str| {
        format!(
            "steps:\n  - ensure_volume: {{ pool: fast, name: {name}, size_bytes: {size}, format: raw, image: {{ url: 'https://{}:{api_port}/images/sha256/{sha256}', checksum: 'sha256:{sha256}', format: {format} }} }}\n",
            HostVm::HOST
        )
    };
    let raw = img_dir.path().join("marker.raw");
    let marker = format!("FERRIC-LVM-{}", std::process::id());
    marker_disk(
        &raw,
        8 * MIB,
        &[(0, marker.as_bytes()), (8 * MIB - 10, b"FERRIC-END")],
    )
    .unwrap();
    let qcow = compressed_qcow2(&raw).unwrap();
    let view = c
        .upload_image(&qcow, "marker", Some("qcow2"), None, |_, _| {})
        .await
        .unwrap();
    let clone = clone_step("cloned", 12 * MIB, &view.sha256, "qcow2");
    assert!(step(&c, &clone).await);
    vm.exec(&first_extent("cloned"), t).await.unwrap();
    let head = vm
        .exec(
            &format!(
                "head -c {} /dev/ferricvg/cloned; echo; dd if=/dev/ferricvg/cloned bs=1 skip={} count=10 2>/dev/null",
                marker.len(),
                8 * MIB - 10
            ),
            t,
        )
        .await
        .unwrap();
    assert_eq!(head, format!("{marker}\nFERRIC-END"));
    assert_eq!(
        vm.exec(&nonzero("cloned"), t).await.unwrap().trim(),
        (marker.len() + 10).to_string(),
        "only the image's bytes are not zero"
    );
    let lv = vm
        .exec(
            "lvs --noheadings -o lv_path,lv_size --units b --nosuffix ferricvg/cloned",
            t,
        )
        .await
        .unwrap();
    assert_eq!(
        lv.split_whitespace().collect::<Vec<_>>(),
        ["/dev/ferricvg/cloned", &(12 * MIB).to_string()]
    );
    assert!(!step(&c, &clone).await, "the image is not written twice");

    // A guest whose disk is the cloned logical volume, a block device rather than a file:
    // QEMU inside the VM boots it, and the guest reads the image's marker from its disk. (QEMU
    // emulated inside QEMU: about two minutes on this machine.)
    let s = apply(
        &c,
        &format!(
            "steps:\n  - ensure_guest: {{ name: onlv, vcpus: 1, memory_mib: 128, volumes: [{{ pool: fast, name: cloned }}], nics: [], boot: {{ kernel: {{ kernel: {}, initrd: {}, cmdline: 'console=ttyS0 panic=-1' }} }}, serial_log: {MAIL}/onlv.log }}\n  - guest_power: {{ name: onlv, action: start }}\n",
            image.kernel.display(),
            image.initrd.display()
        ),
    )
    .await;
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    let xml = vm
        .exec("virsh -c qemu:///system dumpxml onlv", t)
        .await
        .unwrap();
    assert!(xml.contains("<source dev='/dev/ferricvg/cloned'"), "{xml}");
    let log = vm.mail().join("onlv.log");
    let want = format!("FERRIC-VDA {marker}");
    tokio::task::spawn_blocking(move || {
        ferric_tests::hv::wait_serial(&log, &[&want], Duration::from_secs(600))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        step(
            &c,
            "steps:\n  - guest_power: { name: onlv, action: destroy }\n  - delete_guest: { name: onlv }\n"
        )
        .await
    );

    // A raw image whose size is no whole number of blocks (1 MiB and 1001 bytes): the device is
    // cleared from inside a block on (fallocate alone refuses that), on old 0xff extents.
    let odd = img_dir.path().join("odd.raw");
    marker_disk(
        &odd,
        MIB + 1001,
        &[(0, b"FERRIC-ODD"), (MIB + 1001 - 11, b"FERRIC-TAIL")],
    )
    .unwrap();
    let view = c
        .upload_image(&odd, "odd", Some("raw"), None, |_, _| {})
        .await
        .unwrap();
    assert!(step(&c, &clone_step("odd", 4 * MIB, &view.sha256, "raw")).await);
    vm.exec(
        "lvs --noheadings -o seg_pe_ranges ferricvg/odd | grep -q ':3-3'",
        t,
    )
    .await
    .expect("the volume lies on the freed, 0xff-filled extents");
    assert_eq!(
        vm.exec(&nonzero("odd"), t).await.unwrap().trim(),
        (10 + 11).to_string()
    );
    assert!(step(&c, &delete("odd")).await);

    // Deleting through Ferric removes the logical volume; deleting again changes nothing.
    assert!(step(&c, &delete("cloned")).await);
    assert!(!step(&c, &delete("cloned")).await);
    let left = vm
        .exec("lvs --noheadings -o lv_name ferricvg", t)
        .await
        .unwrap();
    assert!(left.trim().is_empty(), "no logical volume is left: {left}");

    // VLAN: a bridge whose port is VLAN 42 on an uplink; a second run changes nothing;
    // deleting the bridge removes the VLAN interface Ferric made and leaves the uplink. The
    // uplink is down, as a fresh port is: Ferric brings it up (a VLAN interface on a down
    // uplink cannot come up).
    vm.exec(
        "ip link add up0 type veth peer name up0p && ip link set up0p up",
        t,
    )
    .await
    .unwrap();
    let vlan = "steps:\n  - ensure_bridge: { name: br42, uplink: up0, vlan: 42 }\n";
    assert!(step(&c, vlan).await);
    let seen = vm
        .exec(
            "basename $(readlink /sys/class/net/up0.42/master); grep -o 'VID: [0-9]*' /proc/net/vlan/up0.42; \
             grep -o 'Device: .*' /proc/net/vlan/up0.42; cat /sys/class/net/br42/operstate",
            t,
        )
        .await
        .unwrap();
    let seen: Vec<&str> = seen.lines().collect();
    assert_eq!(seen[..3], ["br42", "VID: 42", "Device: up0"], "{seen:?}");
    assert!(
        ["up", "unknown"].contains(&seen[3]),
        "bridge is up: {seen:?}"
    );
    vm.exec("test $(( $(cat /sys/class/net/up0/flags) & 1 )) = 1", t)
        .await
        .expect("the uplink is up");
    assert!(!step(&c, vlan).await, "a second run changes nothing");
    // An interface that has the name but is another VLAN is not taken for it.
    vm.exec("ip link add link up0 name up0.9 type vlan id 10", t)
        .await
        .unwrap();
    let s = apply(
        &c,
        "steps:\n  - ensure_bridge: { name: br9, uplink: up0, vlan: 9 }\n",
    )
    .await;
    assert_eq!(s["plan"]["state"], "failed", "{s:#}");
    let failed = &s["events"][1]["kind"]["failed"];
    assert_eq!(failed["kind"], "conflict", "{s:#}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("interface `up0.9` exists and is not VLAN 9 on `up0`"),
        "{s:#}"
    );
    vm.exec("ip link del up0.9", t).await.unwrap();
    // Another VLAN on the same uplink is another sub-interface, beside the first.
    let vlan7 = "steps:\n  - ensure_bridge: { name: br7, uplink: up0, vlan: 7 }\n";
    assert!(step(&c, vlan7).await);
    vm.exec(
        "test $(basename $(readlink /sys/class/net/up0.7/master)) = br7 && \
         test $(basename $(readlink /sys/class/net/up0.42/master)) = br42",
        t,
    )
    .await
    .unwrap();
    for br in ["br42", "br7", "br9"] {
        let del = format!("steps:\n  - delete_bridge: {{ name: {br} }}\n");
        assert!(step(&c, &del).await);
    }
    vm.exec(
        "for l in br42 br7 br9 up0.42 up0.7; do test ! -e /sys/class/net/$l || { echo $l is left; exit 1; }; done; \
         test -e /sys/class/net/up0",
        t,
    )
    .await
    .unwrap();

    coord.shutdown().await;
    drop(vm);
    let _ = std::fs::remove_dir_all(&vm_dir);
}
