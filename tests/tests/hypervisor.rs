//! Tier 4: one real agent on this host drives a real libvirtd, QEMU (TCG here) and Linux
//! bridges through the coordinator. A guest boots a kernel and initramfs and prints a marker on
//! its serial console; a second volume is hot-attached and seen inside the guest; a restarted
//! agent re-applying the plan changes nothing; afterwards no domain, volume, tap or bridge is
//! left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferric_agent::driver::{Drivers, FakeDriver, Unsupported};
use ferric_agent::hypervisor::libvirt::{Accel, Libvirt, LibvirtConfig};
use ferric_agent::hypervisor::netlink::Netlink;
use ferric_agent::telemetry::{HostAndGuests, SysinfoSampler};
use ferric_coordinator::conductor::guests::{CONSOLE_DIR, CreateGuest, GuestAction, GuestView};
use ferric_coordinator::conductor::plans::PlanFile;
use ferric_tests::hv::{ensure_libvirtd, guest_image, virsh, wait_serial};
use ferric_tests::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The drivers as `ferric-agent serve` builds them: libvirt keeps its records in the agent's
/// state directory, beside the identity it fetches images with.
fn drivers(state: &Path, pool_dir: &Path, pool: &str) -> (Drivers, Arc<Libvirt>) {
    drivers_listing(state, pool_dir, pool, &[])
}

/// [`drivers`] with host bridges the operator lets plans use (`--bridge`).
fn drivers_listing(
    state: &Path,
    pool_dir: &Path,
    pool: &str,
    bridges: &[&str],
) -> (Drivers, Arc<Libvirt>) {
    let mut cfg = LibvirtConfig::system(Accel::Tcg);
    cfg.state_dir = state.to_owned();
    cfg.lvm_pools
        .insert("ferric-lvm-test".into(), "ferric-vg-absent".into());
    cfg.pools.insert(pool.to_owned(), pool_dir.to_owned());
    cfg.shutdown_grace = Duration::from_secs(3);
    cfg.bridges = bridges.iter().map(|b| (*b).to_owned()).collect();
    let owned = cfg.owned();
    let lv = Arc::new(Libvirt::new(cfg));
    let drivers = Drivers {
        network: Arc::new(Netlink::new("/sys/class/net", owned)),
        storage: lv.clone(),
        compute: lv.clone(),
        bmc: Arc::new(Unsupported("no BMC on this test host")),
        machine: Arc::new(Unsupported("not a bare-metal node")),
    };
    (drivers, lv)
}

fn start_agent(state: &Path, (drivers, lv): (Drivers, Arc<Libvirt>)) -> InProcessAgent {
    let fake = Arc::new(FakeDriver::new());
    let mut cfg = agent_config(state, fake.clone());
    cfg.drivers = drivers;
    // The guest's kernel, initrd and serial log are under target/, as `--allow-path` would.
    cfg.paths = ferric_agent::paths::PathPolicy::new(
        ferric_agent::paths::DEFAULT_ALLOWED
            .iter()
            .map(std::path::PathBuf::from)
            .chain([ferric_tests::hv::target_dir().unwrap()]),
    );
    // This host as it is (placement reads its size and bridges), with its guests, live.
    cfg.sampler = Arc::new(HostAndGuests {
        host: Arc::new(SysinfoSampler::new().unwrap()),
        guests: lv,
    });
    spawn_agent(cfg, fake)
}

/// Removes whatever a failed run left behind (a passing run leaves nothing: it checks).
struct Leftovers {
    guests: Vec<String>,
    pool: String,
    bridge: String,
    links: Vec<String>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for g in &self.guests {
            let _ = virsh(&["destroy", g]);
            let _ = virsh(&["undefine", g, "--nvram"]);
        }
        for v in ["root", "data"]
            .into_iter()
            .map(str::to_owned)
            .chain(self.guests.iter().map(|g| format!("{g}-root")))
        {
            let _ = virsh(&["vol-delete", &v, "--pool", &self.pool]);
        }
        let _ = virsh(&["pool-destroy", &self.pool]);
        let _ = virsh(&["pool-undefine", &self.pool]);
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        for l in &self.links {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", l])
                .output();
        }
    }
}

fn taps() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vnet"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_lifecycle_on_real_libvirt_leaves_nothing_behind() {
    init_tracing();
    ensure_libvirtd().unwrap();
    let image = guest_image().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id();
    let pool = format!("ferric-test-{id}");
    let bridge = format!("brft{}", id % 100_000);
    let guest = format!("ferric-test-{id}");
    let _leftovers = Leftovers {
        guests: vec![
            guest.clone(),
            format!("other-{id}"),
            format!("placed-{id}"),
            format!("cloned-{id}"),
        ],
        pool: pool.clone(),
        bridge: bridge.clone(),
        links: vec![
            format!("vlbr{}", id % 100_000),
            format!("upl{}", id % 100_000),
        ],
    };
    let pool_dir = dir.path().join("pool");
    // The console log stays in target/ so that a failure can be read afterwards.
    let logs = ferric_tests::hv::target_dir().unwrap().join("hv-test-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let serial = logs.join(format!("{guest}.serial.log"));
    let taps_before = taps();

    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let c = client(coord.api);
    let state = enroll_node(&coord, dir.path(), "hv1").await.unwrap();
    let agent = start_agent(&state, drivers(&state, &pool_dir, &pool));

    let create: PlanFile = serde_yaml_ng::from_str(&format!(
        r#"
steps:
  - ensure_bridge: {{ name: {bridge} }}
  - ensure_volume: {{ pool: {pool}, name: root, size_bytes: 67108864 }}
  - ensure_volume: {{ pool: {pool}, name: data, size_bytes: 33554432, format: raw }}
  - ensure_guest:
      name: {guest}
      vcpus: 1
      memory_mib: 256
      volumes: [{{ pool: {pool}, name: root }}]
      nics: [{{ bridge: {bridge} }}]
      boot: {{ kernel: {{ kernel: {kernel}, initrd: {initrd}, cmdline: "console=ttyS0 panic=-1" }} }}
      serial_log: {serial}
  - guest_power: {{ name: {guest}, action: start }}
"#,
        kernel = image.kernel.display(),
        initrd = image.initrd.display(),
        serial = serial.display(),
    ))
    .unwrap();
    let p = c.apply(vec!["hv1".into()], create.clone()).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");

    // The guest really runs: its console says so, with its one disk.
    wait_serial(&serial, &["FERRIC-GUEST-UP"], Duration::from_secs(90)).unwrap();
    let disks = wait_serial(&serial, &["FERRIC-DISKS", "vda"], Duration::from_secs(30)).unwrap();
    assert!(!disks.contains("vdb"), "{disks}");
    assert!(virsh(&["domstate", &guest]).unwrap().contains("running"));
    assert!(
        Path::new("/sys/class/net")
            .join(&bridge)
            .join("bridge")
            .is_dir()
    );
    // Other tests make taps too: this guest's is the one on this test's bridge.
    let new_taps: Vec<String> = taps()
        .into_iter()
        .filter(|t| {
            Path::new("/sys/class/net")
                .join(t)
                .join("master")
                .read_link()
                .is_ok_and(|m| m.ends_with(&bridge))
        })
        .collect();
    assert_eq!(
        new_taps.len(),
        1,
        "one tap for the guest's NIC, a port of the bridge: {new_taps:?}"
    );
    assert!(!taps_before.contains(&new_taps[0]));

    // Guest telemetry reaches the coordinator in the host's samples.
    let g = wait_for(Duration::from_secs(20), "guest telemetry", || async {
        let latest = coord.shared.hub.telemetry.latest("hv1");
        Ok(latest.and_then(|t| {
            t.sample
                .guests
                .into_iter()
                .find(|g| g.name == guest && g.running && g.block_rd_bytes > 0)
        }))
    })
    .await
    .unwrap();
    assert_eq!(g.mem_bytes, 256 << 20);

    // Hot-attach the second volume: the running guest sees vdb.
    let attach: PlanFile = serde_yaml_ng::from_str(&format!(
        "steps:\n  - attach_volume: {{ guest: {guest}, pool: {pool}, volume: data, target: vdb }}\n"
    ))
    .unwrap();
    let p = c.apply(vec!["hv1".into()], attach.clone()).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    wait_serial(
        &serial,
        &["FERRIC-DISKS", "vda", "vdb"],
        Duration::from_secs(60),
    )
    .unwrap();

    // Hot-detach: the running guest loses vdb.
    let detach: PlanFile = serde_yaml_ng::from_str(&format!(
        "steps:\n  - detach_volume: {{ guest: {guest}, pool: {pool}, volume: data }}\n"
    ))
    .unwrap();
    let p = c.apply(vec!["hv1".into()], detach).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    wait_for(
        Duration::from_secs(60),
        "vdb gone from the guest",
        || async {
            let text = std::fs::read_to_string(&serial).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find(|l| l.starts_with("FERRIC-DISKS"))
                .unwrap_or("")
                .to_owned();
            Ok((last.contains("vda") && !last.contains("vdb")).then_some(()))
        },
    )
    .await
    .unwrap();
    let p = c.apply(vec!["hv1".into()], attach.clone()).await.unwrap()[0].id;
    wait_plan_finished(&c, p, Duration::from_secs(60))
        .await
        .unwrap();
    wait_serial(
        &serial,
        &["FERRIC-DISKS", "vda", "vdb"],
        Duration::from_secs(60),
    )
    .unwrap();

    // A bridge with a VLAN sub-interface on an uplink; deleting the bridge removes the VLAN
    // interface Ferric made, not the uplink.
    let uplink = format!("upl{}", id % 100_000);
    let vlan_bridge = format!("vlbr{}", id % 100_000);
    // An uplink for the test: one end of a veth pair (this kernel has no dummy driver).
    let st = std::process::Command::new("ip")
        .args([
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{uplink}p"),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "a veth uplink for the test");
    let sys = Path::new("/sys/class/net");
    let plan = |y: String| -> PlanFile { serde_yaml_ng::from_str(&y).unwrap() };
    // The uplink itself enslaved to the bridge; a second run changes nothing; deleting the
    // bridge leaves the uplink.
    let plain = plan(format!(
        "steps:\n  - ensure_bridge: {{ name: {vlan_bridge}, uplink: {uplink} }}\n"
    ));
    for changed in [true, false] {
        let p = c.apply(vec!["hv1".into()], plain.clone()).await.unwrap()[0].id;
        let s = wait_plan_finished(&c, p, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(s["events"][1]["kind"]["done"]["changed"], changed, "{s:#}");
    }
    assert!(
        sys.join(&uplink)
            .join("master")
            .read_link()
            .unwrap()
            .ends_with(&vlan_bridge)
    );
    let del = plan(format!(
        "steps:\n  - delete_bridge: {{ name: {vlan_bridge} }}\n"
    ));
    let p = c.apply(vec!["hv1".into()], del.clone()).await.unwrap()[0].id;
    assert_eq!(
        wait_plan_finished(&c, p, Duration::from_secs(30))
            .await
            .unwrap()["plan"]["state"],
        "succeeded"
    );
    assert!(!sys.join(&vlan_bridge).exists() && sys.join(&uplink).exists());

    // A VLAN sub-interface on the uplink, where the kernel has 802.1Q; where it has not, the
    // step fails and says which interface it could not make.
    let probe = format!("{uplink}.7");
    let has_vlan = std::process::Command::new("ip")
        .args([
            "link", "add", "link", &uplink, "name", &probe, "type", "vlan", "id", "7",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    let vlan = plan(format!(
        "steps:\n  - ensure_bridge: {{ name: {vlan_bridge}, uplink: {uplink}, vlan: 42 }}\n"
    ));
    let p = c.apply(vec!["hv1".into()], vlan).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(30))
        .await
        .unwrap();
    let port = sys.join(format!("{uplink}.42"));
    if has_vlan {
        std::process::Command::new("ip")
            .args(["link", "del", &probe])
            .status()
            .unwrap();
        assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
        assert!(
            port.join("master")
                .read_link()
                .unwrap()
                .ends_with(&vlan_bridge)
        );
        let p = c.apply(vec!["hv1".into()], del).await.unwrap()[0].id;
        assert_eq!(
            wait_plan_finished(&c, p, Duration::from_secs(30))
                .await
                .unwrap()["plan"]["state"],
            "succeeded"
        );
        assert!(!port.exists(), "the VLAN interface went with the bridge");
    } else {
        assert_eq!(s["plan"]["state"], "failed", "{s:#}");
        let msg = s["events"][1]["kind"]["failed"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            msg.contains(&format!("create VLAN interface `{uplink}.42`")),
            "{msg}"
        );
        let p = c.apply(vec!["hv1".into()], del).await.unwrap()[0].id;
        wait_plan_finished(&c, p, Duration::from_secs(30))
            .await
            .unwrap();
    }
    std::process::Command::new("ip")
        .args(["link", "del", &uplink])
        .status()
        .unwrap();

    // Restart the agent, then apply both plans again: every step reports no change.
    agent.stop().await.unwrap();
    let agent = start_agent(&state, drivers(&state, &pool_dir, &pool));
    for plan in [create, attach] {
        let p = c.apply(vec!["hv1".into()], plan).await.unwrap()[0].id;
        let s = wait_plan_finished(&c, p, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
        for e in s["events"].as_array().unwrap() {
            if let Some(done) = e["kind"].get("done") {
                assert_eq!(done["changed"], false, "a second run changes nothing: {e}");
            }
        }
    }

    // An LVM pool: on a kernel without device-mapper (this one) the step says so; elsewhere
    // libvirt names the volume group that does not exist. Nothing is defined either way.
    let lvm: PlanFile = serde_yaml_ng::from_str(
        "steps:\n  - ensure_volume: { pool: ferric-lvm-test, name: v, size_bytes: 1048576 }\n",
    )
    .unwrap();
    let p = c.apply(vec!["hv1".into()], lvm).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(30))
        .await
        .unwrap();
    let failed = &s["events"][1]["kind"]["failed"];
    let msg = failed["message"].as_str().unwrap_or_default();
    if std::fs::read_to_string("/proc/devices")
        .unwrap()
        .contains("device-mapper")
    {
        assert!(msg.contains("ferric-vg-absent"), "{s:#}");
        let _ = virsh(&["pool-undefine", "ferric-lvm-test"]);
    } else {
        assert_eq!(failed["kind"], "unsupported", "{s:#}");
        assert!(
            msg.contains("volume group `ferric-vg-absent`, but this kernel has no device-mapper"),
            "{s:#}"
        );
        assert!(
            virsh(&["pool-info", "ferric-lvm-test"]).is_err(),
            "no pool defined"
        );
    }

    // A spec that cannot work is refused before anything is touched, naming the field.
    let bad: PlanFile = serde_yaml_ng::from_str(&format!(
        "steps:\n  - ensure_guest: {{ name: other-{id}, vcpus: 1, memory_mib: 64, volumes: [{{ pool: {pool}, name: root }}], nics: [{{ bridge: nosuchbr0 }}] }}\n"
    ))
    .unwrap();
    let p = c.apply(vec!["hv1".into()], bad).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(60))
        .await
        .unwrap();
    let failed = &s["events"][1]["kind"]["failed"];
    assert_eq!(failed["kind"], "not_found", "{s:#}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("field `nics.bridge`: bridge `nosuchbr0` does not exist"),
        "{failed}"
    );
    assert!(
        virsh(&["dominfo", &format!("other-{id}")]).is_err(),
        "nothing was defined"
    );

    // A guest as desired state: placed by the coordinator on this host (the only one, with
    // the bridge), created, observed running through libvirt telemetry, stopped, deleted.
    let placed = format!("placed-{id}");
    let created: GuestAction = c
        .post(
            "/v1/guests",
            &CreateGuest {
                name: placed.clone(),
                vcpus: 1,
                memory_mib: 128,
                disk_bytes: 64 << 20,
                nets: vec![bridge.clone()],
                boot: ferric_proto::plan::GuestBoot::Kernel {
                    kernel: image.kernel.display().to_string(),
                    initrd: image.initrd.display().to_string(),
                    cmdline: "console=ttyS0 panic=-1".into(),
                },
                pool: pool.clone(),
                image: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.host, "hv1");
    let s = wait_plan_finished(&c, created.plan, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    let console = Path::new(CONSOLE_DIR).join(format!("{placed}.log"));
    wait_serial(&console, &["FERRIC-GUEST-UP"], Duration::from_secs(90)).unwrap();
    let observed = |want: &'static str| {
        let c = c.clone();
        let placed = placed.clone();
        async move {
            wait_for(
                Duration::from_secs(20),
                &format!("guest observed {want}"),
                || async {
                    let v: GuestView = c.get(&format!("/v1/guests/{placed}")).await?;
                    Ok((v.observed.as_str() == want).then_some(v))
                },
            )
            .await
            .unwrap()
        }
    };
    let v = observed("running").await;
    assert!(v.drift.is_empty(), "{v:?}");
    // Stopped behind Ferric's back: shown as drift, healed by asking for the desired state.
    virsh(&["destroy", &placed]).unwrap();
    let v: GuestView = wait_for(Duration::from_secs(20), "drift reported", || async {
        let v: GuestView = c.get(&format!("/v1/guests/{placed}")).await?;
        Ok((!v.drift.is_empty()).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(v.drift, vec!["stopped outside Ferric"]);
    let start: GuestAction = c
        .post(
            &format!("/v1/guests/{placed}/start"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    wait_plan_finished(&c, start.plan, Duration::from_secs(60))
        .await
        .unwrap();
    let v = observed("running").await;
    assert!(v.drift.is_empty(), "{v:?}");
    // Its root volume grown behind Ferric's back: shown as drift with both sizes.
    virsh(&["blockresize", &placed, "vda", "80M"]).unwrap();
    let v: GuestView = wait_for(Duration::from_secs(20), "resize drift reported", || async {
        let v: GuestView = c.get(&format!("/v1/guests/{placed}")).await?;
        Ok((!v.drift.is_empty()).then_some(v))
    })
    .await
    .unwrap();
    assert!(
        v.drift[0].ends_with(&format!(
            "{placed}-root resized outside Ferric: {} bytes, want {}",
            80u64 << 20,
            64u64 << 20
        )),
        "{v:?}"
    );
    // Its root volume deleted behind Ferric's back (QEMU keeps the open file; the guest runs on).
    virsh(&["vol-delete", &format!("{placed}-root"), "--pool", &pool]).unwrap();
    let v: GuestView = wait_for(Duration::from_secs(20), "volume drift reported", || async {
        let v: GuestView = c.get(&format!("/v1/guests/{placed}")).await?;
        Ok(v.drift.iter().any(|d| d.contains("deleted")).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(
        v.drift.len(),
        1,
        "a deleted disk has no size to compare: {v:?}"
    );
    assert!(
        v.drift[0].starts_with("disk ")
            && v.drift[0].ends_with(&format!("{placed}-root deleted outside Ferric")),
        "{v:?}"
    );
    let stop: GuestAction = c
        .post(&format!("/v1/guests/{placed}/stop"), &serde_json::json!({}))
        .await
        .unwrap();
    wait_plan_finished(&c, stop.plan, Duration::from_secs(60))
        .await
        .unwrap();
    let v = observed("stopped").await;
    assert_eq!(v.desired.as_str(), "stopped");
    let del: GuestAction = c.delete(&format!("/v1/guests/{placed}")).await.unwrap();
    let s = wait_plan_finished(&c, del.plan, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    assert!(
        virsh(&["dominfo", &placed]).is_err(),
        "placed guest's domain is gone"
    );
    let guests: Vec<GuestView> = c.get("/v1/guests").await.unwrap();
    assert!(guests.is_empty(), "{guests:?}");
    let _ = std::fs::remove_file(&console);

    // A guest whose root volume is cloned from an image in the coordinator's store: the
    // agent streams the (compressed qcow2) image into the volume, checks its sha256, and the
    // guest reads the image's marker from its first disk.
    let marker = format!("FERRIC-IMAGE-{id}");
    let img_dir = tempfile::tempdir().unwrap();
    let raw = img_dir.path().join("marker.raw");
    ferric_tests::hv::marker_disk(
        &raw,
        8 << 20,
        &[(0, marker.as_bytes()), ((8 << 20) - 3, b"end")],
    )
    .unwrap();
    let qcow = ferric_tests::hv::compressed_qcow2(&raw).unwrap();
    let image_name = format!("marker-{id}");
    let view = c
        .upload_image(&qcow, &image_name, Some("qcow2"), None, |_, _| {})
        .await
        .unwrap();
    let cloned = format!("cloned-{id}");
    let request = |disk_bytes: u64| CreateGuest {
        name: cloned.clone(),
        vcpus: 1,
        memory_mib: 128,
        disk_bytes,
        nets: vec![bridge.clone()],
        boot: ferric_proto::plan::GuestBoot::Kernel {
            kernel: image.kernel.display().to_string(),
            initrd: image.initrd.display().to_string(),
            cmdline: "console=ttyS0 panic=-1".into(),
        },
        pool: pool.clone(),
        image: Some(image_name.clone()),
    };
    // Too small a disk for the image is refused before anything is placed.
    let err = c
        .post::<_, GuestAction>("/v1/guests", &request(4 << 20))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `disk_bytes`"), "{err}");
    let created: GuestAction = c.post("/v1/guests", &request(16 << 20)).await.unwrap();
    let s = wait_plan_finished(&c, created.plan, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    let console = Path::new(CONSOLE_DIR).join(format!("{cloned}.log"));
    wait_serial(
        &console,
        &[&format!("FERRIC-VDA {marker}")],
        Duration::from_secs(90),
    )
    .unwrap();
    let info = virsh(&["vol-info", "--pool", &pool, &format!("{cloned}-root")]).unwrap();
    assert!(
        info.contains("16.00 MiB"),
        "the clone has the volume's size: {info}"
    );
    let record = state
        .join("volume-images")
        .join(&pool)
        .join(format!("{cloned}-root"));
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        format!("sha256:{}", view.sha256)
    );
    // Ensuring the same clone again changes nothing (the image is not written twice).
    let again: PlanFile = serde_yaml_ng::from_str(&format!(
        "steps:\n  - ensure_volume: {{ pool: {pool}, name: {cloned}-root, size_bytes: {}, format: raw, image: {{ url: 'https://{}/images/sha256/{}', checksum: 'sha256:{}' }} }}\n",
        16 << 20,
        coord.api,
        view.sha256,
        view.sha256
    ))
    .unwrap();
    let p = c.apply(vec!["hv1".into()], again).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(s["events"][1]["kind"]["done"]["changed"], false, "{s:#}");
    let del: GuestAction = c.delete(&format!("/v1/guests/{cloned}")).await.unwrap();
    let s = wait_plan_finished(&c, del.plan, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    assert!(!record.exists(), "the clone's record goes with its volume");
    let vols = virsh(&["vol-list", &pool]).unwrap();
    assert!(!vols.contains(&cloned), "{vols}");
    let _ = std::fs::remove_file(&console);

    // Tear down through Ferric.
    let teardown: PlanFile = serde_yaml_ng::from_str(&format!(
        r#"
steps:
  - guest_power: {{ name: {guest}, action: shutdown }}
  - delete_guest: {{ name: {guest} }}
  - delete_volume: {{ pool: {pool}, name: data }}
  - delete_volume: {{ pool: {pool}, name: root }}
  - delete_bridge: {{ name: {bridge} }}
"#
    ))
    .unwrap();
    let p = c.apply(vec!["hv1".into()], teardown).await.unwrap()[0].id;
    let s = wait_plan_finished(&c, p, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");

    assert!(virsh(&["dominfo", &guest]).is_err(), "domain is gone");
    let vols = virsh(&["vol-list", &pool]).unwrap();
    assert!(!vols.contains("root") && !vols.contains("data"), "{vols}");
    assert_eq!(
        std::fs::read_dir(&pool_dir).unwrap().count(),
        0,
        "pool directory is empty"
    );
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge is gone"
    );
    assert!(!taps().contains(&new_taps[0]), "the guest's tap is gone");

    agent.stop().await.unwrap();
    coord.shutdown().await;
    let _ = std::fs::remove_file(&serial);
}

/// Finding 4 of the provisioning network's review: plans could delete or take over any bridge
/// (the host's uplink bridge included) and any volume or LV of a pool over an existing volume
/// group. Now only what Ferric made, or the operator listed, is touched; the host's own
/// objects are refused with the reason and left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_touch_only_the_bridges_and_volumes_ferric_made_or_the_operator_listed() {
    init_tracing();
    ensure_libvirtd().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id() % 100_000;
    let pool = format!("ferric-own-{id}");
    let host_br = format!("brh{id}");
    let host_up = format!("uph{id}");
    let _leftovers = Leftovers {
        guests: vec![format!("own-{id}")],
        pool: pool.clone(),
        bridge: host_br.clone(),
        links: vec![host_up.clone(), format!("brf{id}")],
    };
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    // The host's objects: a bridge, an interface holding an address (as the host's uplink
    // does), a volume in the pool made by someone else.
    ip(&["link", "add", &host_br, "type", "bridge"]);
    ip(&[
        "link",
        "add",
        &host_up,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{host_up}p"),
    ]);
    ip(&["addr", "add", "10.252.77.1/30", "dev", &host_up]);
    let pool_dir = dir.path().join("pool");
    let coord = start_coordinator(&dir.path().join("coord")).await.unwrap();
    let c = client(coord.api);
    let state = enroll_node(&coord, dir.path(), "hv1").await.unwrap();
    let agent = start_agent(&state, drivers(&state, &pool_dir, &pool));
    let run = |yaml: String| {
        let c = c.clone();
        async move {
            let plan: PlanFile = serde_yaml_ng::from_str(&yaml).unwrap();
            let p = c.apply(vec!["hv1".into()], plan).await.unwrap()[0].id;
            wait_plan_finished(&c, p, Duration::from_secs(60))
                .await
                .unwrap()
        }
    };
    let refused = |s: &serde_json::Value, needle: &str| {
        assert_eq!(s["plan"]["state"], "failed", "{s:#}");
        let text = s.to_string();
        assert!(text.contains(needle), "{needle}: {text}");
    };
    // Ferric's own volume defines the pool; then someone else's volume appears in it.
    let s = run(format!(
        "steps:\n  - ensure_volume: {{ pool: {pool}, name: mine, size_bytes: 1048576 }}\n"
    ))
    .await;
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    virsh(&["vol-create-as", &pool, "hostvol", "1M"]).unwrap();

    let s = run(format!(
        "steps:\n  - delete_bridge: {{ name: {host_br} }}\n"
    ))
    .await;
    refused(&s, "was not made by Ferric");
    refused(&s, &format!("--bridge {host_br}"));
    assert!(
        Path::new("/sys/class/net").join(&host_br).exists(),
        "the host's bridge stays"
    );
    let s = run(format!(
        "steps:\n  - ensure_bridge: {{ name: {host_br} }}\n"
    ))
    .await;
    refused(&s, "was not made by Ferric");
    let s = run(format!(
        "steps:\n  - ensure_bridge: {{ name: brf{id}, uplink: {host_up} }}\n"
    ))
    .await;
    refused(&s, "holds the host's address 10.252.77.1");
    refused(&s, &format!("--uplink {host_up}"));
    let s = run(format!(
        "steps:\n  - delete_volume: {{ pool: {pool}, name: hostvol }}\n"
    ))
    .await;
    refused(&s, "was not made by Ferric");
    let s = run(format!(
        "steps:\n  - ensure_volume: {{ pool: {pool}, name: hostvol, size_bytes: 4194304 }}\n"
    ))
    .await;
    refused(&s, &format!("--volume {pool}/hostvol"));
    assert!(
        virsh(&["vol-info", "--pool", &pool, "hostvol"]).is_ok(),
        "the volume stays"
    );
    let s = run(format!(
        "steps:\n  - ensure_guest: {{ name: own-{id}, vcpus: 1, memory_mib: 64, volumes: [{{ pool: {pool}, name: hostvol }}] }}\n"
    ))
    .await;
    refused(&s, "attach to a guest");
    let s = run(format!(
        "steps:\n  - ensure_guest: {{ name: own-{id}, vcpus: 1, memory_mib: 64, volumes: [{{ pool: {pool}, name: mine }}], nics: [{{ bridge: {host_br} }}] }}\n"
    ))
    .await;
    refused(&s, "attach a guest to");
    // What Ferric made it deletes.
    let s = run(format!(
        "steps:\n  - delete_volume: {{ pool: {pool}, name: mine }}\n"
    ))
    .await;
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    agent.stop().await.unwrap();

    // The operator lists the host's bridge: plans may use it, still not delete it.
    let agent = start_agent(
        &state,
        drivers_listing(&state, &pool_dir, &pool, &[&host_br]),
    );
    let s = run(format!(
        "steps:\n  - ensure_bridge: {{ name: {host_br} }}\n"
    ))
    .await;
    assert_eq!(s["plan"]["state"], "succeeded", "{s:#}");
    let s = run(format!(
        "steps:\n  - delete_bridge: {{ name: {host_br} }}\n"
    ))
    .await;
    refused(&s, "was not made by Ferric");
    agent.stop().await.unwrap();
    let _ = virsh(&["vol-delete", "--pool", &pool, "hostvol"]);
    coord.shutdown().await;
}
