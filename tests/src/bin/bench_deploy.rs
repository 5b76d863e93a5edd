//! Deploy benchmark. For each rack size, lab nodes (QEMU under TCG behind ipmi_sim BMCs) are
//! managed and provided (a network boot into the release ramdisk, which erases the disks),
//! powered off (so that nothing is resident), and deployed all at once with the small test OS
//! image (qcow2). Each phase is timed from the coordinator's transition log: `deploy` →
//! power-cycled into the network boot → ramdisk called back → image (and config drive)
//! written and rebooted → power confirmed, active. The clean before it is timed the same way.
//! Then a real cloud image (Debian 12 with cloud-init, `tests/src/cloud_image.rs`) to a rack
//! of two: a UEFI node with a 4Kn NVMe disk and a BIOS node with a 512-byte virtio disk, each
//! with a static address: `deploy` → active, and → its SSH server answering with the deploy's
//! key (the OS's own boot, cloud-init included).
//! Published figures of other systems are printed beside them (not measured here).

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_coordinator::conductor::lifecycle::{LifecycleView, ProvisionRequest, Verb};
use ferric_coordinator::conductor::nodes::NodeDetail;
use ferric_lab::UpOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Rack sizes (repeat).
    #[arg(long = "nodes", default_values_t = [1u32, 3])]
    nodes: Vec<u32>,
    /// Memory per lab node, MiB.
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// The ramdisk binary (release).
    #[arg(long)]
    binary: PathBuf,
    /// Where the kernel is downloaded and the ramdisk built.
    #[arg(long)]
    work: PathBuf,
    /// Skip the cloud image's deploy.
    #[arg(long)]
    no_cloud: bool,
}

fn at(v: &LifecycleView, after: i64, pred: impl Fn(&str, Option<&str>) -> bool) -> Option<i64> {
    v.transitions
        .iter()
        .find(|t| t.at_ms >= after && pred(&t.to, t.step.as_deref()))
        .map(|t| t.at_ms)
}

async fn verb(
    c: &ferric_coordinator::client::Client,
    node: &str,
    verb: Verb,
    image: Option<&str>,
) -> Result<()> {
    let req = ProvisionRequest {
        verb,
        erase: None,
        image: image.map(str::to_owned),
        root: None,
        config_drive: None,
        instance: None,
        image_url: None,
    };
    c.post::<_, LifecycleView>(&format!("/v1/nodes/{node}/provision"), &req)
        .await
        .with_context(|| format!("{verb} {node}"))?;
    Ok(())
}

async fn wait_all(
    c: &ferric_coordinator::client::Client,
    nodes: &[String],
    state: &str,
    limit: Duration,
) -> Result<Vec<LifecycleView>> {
    let started = Instant::now();
    loop {
        let mut views = vec![];
        for n in nodes {
            let d: NodeDetail = c.get(&format!("/v1/nodes/{n}")).await?;
            let v = d.lifecycle.context("no lifecycle")?;
            if v.state.to_string().ends_with("failed") {
                bail!("{n} is {}: {}", v.state, v.error.unwrap_or_default());
            }
            views.push(v);
        }
        if views
            .iter()
            .all(|v| v.state.to_string() == state && v.step.is_none())
        {
            return Ok(views);
        }
        if started.elapsed() > limit {
            bail!("not {state} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A coordinator with boot services on `rack`'s provisioning link and a management agent
/// driving its BMCs, the rack's nodes enrolled, and `image` uploaded as `name`.
async fn fleet(
    rack: &ferric_lab::Rack,
    ramdisk: &std::path::Path,
    work: &std::path::Path,
    image: &std::path::Path,
    name: &str,
) -> Result<(
    ferric_coordinator::Running,
    ferric_tests::InProcessAgent,
    ferric_coordinator::client::Client,
)> {
    let mut cfg = ferric_tests::coordinator_config(&work.join("coord"));
    cfg.listen = "0.0.0.0:0".parse()?;
    let mut boot = BootConfig::new(&rack.prov_veth(), ramdisk.to_owned());
    boot.http_port = 0;
    cfg.boot = Some(boot);
    let coord = ferric_tests::start(cfg).await?;
    let agent = ferric_tests::management_agent(&coord, work, IpmiClient::default(), None).await?;
    let c = ferric_tests::client(coord.api);
    for n in &rack.nodes {
        ferric_tests::enroll_lab_node(coord.api, rack, n).await?;
    }
    let up = ferric_tests::cli_ok(
        coord.api,
        &[
            "image",
            "upload",
            image.to_str().unwrap_or_default(),
            "--name",
            name,
        ],
    )
    .await;
    if !up.contains("qcow2") {
        bail!("upload: {up}");
    }
    Ok((coord, agent, c))
}

async fn rack(
    args: &Args,
    ramdisk: &std::path::Path,
    image: &std::path::Path,
    nodes: u32,
) -> Result<(f64, Vec<[f64; 4]>, f64)> {
    let work = args.work.join(format!("rack{nodes}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let name = format!("bd{}{nodes}", std::process::id() % 10_000);
    let rack = ferric_lab::up(&UpOptions {
        name: name.clone(),
        dir: work.join("lab").join(&name),
        nodes,
        memory_mib: args.memory_mib,
        disk_bytes: 1 << 30,
        accel: "tcg".into(),
        ferric: ferric_tests::bin("ferric")?,
        // The small MBR test image boots with SYSLINUX: BIOS.
        firmware: vec![ferric_lab::Firmware::Bios],
        disk_bus: Vec::new(),
        sector_size: Vec::new(),
        netboot: Vec::new(),
        bmc: Vec::new(),
    })?;
    let result = async {
        let (coord, agent, c) = fleet(&rack, ramdisk, &work, image, "os").await?;
        let names: Vec<String> = rack.nodes.iter().map(|n| n.name.clone()).collect();
        for n in &names {
            verb(&c, n, Verb::Manage, None).await?;
        }
        wait_all(&c, &names, "manageable", Duration::from_secs(60)).await?;
        let t_clean = ferric_coordinator::now_ms();
        for n in &names {
            verb(&c, n, Verb::Provide, None).await?;
        }
        let views = wait_all(&c, &names, "available", Duration::from_secs(600)).await?;
        let clean = views
            .iter()
            .map(|v| v.since_ms - t_clean)
            .max()
            .unwrap_or(0) as f64
            / 1000.0;
        // Nothing resident: the deploy boots every node anew.
        for n in &names {
            ferric_tests::cli_ok(coord.api, &["node", "power", "off", n]).await;
        }
        let t0 = ferric_coordinator::now_ms();
        for n in &names {
            verb(&c, n, Verb::Deploy, Some("os")).await?;
        }
        let views = wait_all(&c, &names, "active", Duration::from_secs(600)).await?;
        let total = views.iter().map(|v| v.since_ms - t0).max().unwrap_or(0) as f64 / 1000.0;
        let mut per = vec![];
        for v in &views {
            let booted =
                at(v, t0, |_, s| s == Some("wait-callback")).context("no wait-callback")?;
            let called = at(v, t0, |_, s| s == Some("write")).context("no write")?;
            let written = at(v, t0, |_, s| s == Some("read-power")).context("no read-power")?;
            let active = at(v, t0, |to, s| to == "active" && s.is_none()).context("no active")?;
            let secs = |a: i64, b: i64| (b - a) as f64 / 1000.0;
            per.push([
                secs(t0, booted),
                secs(booted, called),
                secs(called, written),
                secs(written, active),
            ]);
        }
        agent.stop().await?;
        coord.shutdown().await;
        Ok((clean, per, total))
    }
    .await;
    let _ = ferric_lab::down(&rack.dir);
    result
}

/// What [`cloud`] measured of one node: its kind, the phases as in [`rack`], from active until
/// SSH answers, and from `deploy` until it does.
type CloudRow = (&'static str, [f64; 4], f64, f64);

/// The cloud image deployed to a UEFI NVMe-4Kn node and a BIOS virtio node at once.
async fn cloud(
    args: &Args,
    ramdisk: &std::path::Path,
    image: &std::path::Path,
) -> Result<Vec<CloudRow>> {
    let work = args.work.join("cloud");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let name = format!("bc{}", std::process::id() % 10_000);
    let rack = ferric_lab::up(&UpOptions {
        name: name.clone(),
        dir: work.join("lab").join(&name),
        nodes: 2,
        memory_mib: 1024,
        disk_bytes: 4 << 30,
        accel: "tcg".into(),
        ferric: ferric_tests::bin("ferric")?,
        firmware: vec![ferric_lab::Firmware::Uefi, ferric_lab::Firmware::Bios],
        disk_bus: vec![ferric_lab::DiskBus::Nvme, ferric_lab::DiskBus::Virtio],
        sector_size: vec![4096, 512],
        netboot: Vec::new(),
        bmc: Vec::new(),
    })?;
    let result = async {
        let (coord, agent, c) = fleet(&rack, ramdisk, &work, image, "debian-12").await?;
        let api = coord.api;
        let names: Vec<String> = rack.nodes.iter().map(|n| n.name.clone()).collect();
        for n in &names {
            verb(&c, n, Verb::Manage, None).await?;
        }
        wait_all(&c, &names, "manageable", Duration::from_secs(60)).await?;
        for n in &names {
            verb(&c, n, Verb::Provide, None).await?;
        }
        wait_all(&c, &names, "available", Duration::from_secs(600)).await?;
        let mut addresses = vec![];
        for (i, n) in rack.nodes.iter().enumerate() {
            // Nothing resident: the deploy boots every node anew.
            ferric_tests::cli_ok(api, &["node", "power", "off", &n.name]).await;
            let address = format!("10.248.{}.{}", rack.subnet, 20 + i);
            ferric_tests::cli_ok(
                api,
                &[
                    "node",
                    "port",
                    &n.name,
                    &n.mac,
                    "--address",
                    &format!("{address}/24"),
                ],
            )
            .await;
            addresses.push(address);
        }
        let key = work.join("key");
        let o = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()?;
        if !o.status.success() {
            bail!("ssh-keygen: {}", String::from_utf8_lossy(&o.stderr));
        }
        let public = key.with_extension("pub");
        let t0 = ferric_coordinator::now_ms();
        let mut args = vec!["node", "deploy"];
        args.extend(names.iter().map(String::as_str));
        args.extend([
            "--image",
            "debian-12",
            "--ssh-key",
            public.to_str().unwrap_or_default(),
        ]);
        ferric_tests::cli_ok(api, &args).await;
        let views = wait_all(&c, &names, "active", Duration::from_secs(900)).await?;
        // Every node is tried in each round, so a node that answers first is timed as such.
        let mut answered: Vec<Option<i64>> = vec![None; views.len()];
        let started = ferric_coordinator::now_ms();
        while answered.iter().any(Option::is_none) {
            for (a, address) in answered.iter_mut().zip(&addresses) {
                if a.is_some() {
                    continue;
                }
                let o = ferric_tests::cloud_image::ssh(&key, address, "true")
                    .output()
                    .await?;
                if o.status.success() {
                    *a = Some(ferric_coordinator::now_ms());
                }
            }
            if ferric_coordinator::now_ms() - started > 600_000 {
                bail!("SSH did not answer within 10 min of active: {addresses:?} {answered:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut rows = vec![];
        for ((v, answered), kind) in views
            .iter()
            .zip(answered.into_iter().flatten())
            .zip(["UEFI, NVMe 4Kn", "BIOS, virtio 512"])
        {
            let booted =
                at(v, t0, |_, s| s == Some("wait-callback")).context("no wait-callback")?;
            let called = at(v, t0, |_, s| s == Some("write")).context("no write")?;
            let written = at(v, t0, |_, s| s == Some("read-power")).context("no read-power")?;
            let active = at(v, t0, |to, s| to == "active" && s.is_none()).context("no active")?;
            let secs = |a: i64, b: i64| (b - a) as f64 / 1000.0;
            rows.push((
                kind,
                [
                    secs(t0, booted),
                    secs(booted, called),
                    secs(called, written),
                    secs(written, active),
                ],
                secs(active, answered),
                secs(t0, answered),
            ));
        }
        agent.stop().await?;
        coord.shutdown().await;
        Ok(rows)
    }
    .await;
    let _ = ferric_lab::down(&rack.dir);
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let kernel =
        ferric_ramdisk::build::debian_kernel("linux-image-amd64", &args.work.join("kernel"))?;
    let ramdisk = args.work.join("ramdisk");
    ferric_ramdisk::build::build(&ferric_ramdisk::build::BuildOptions {
        binary: args.binary.clone(),
        kernel,
        out: ramdisk.clone(),
        level: 19,
        cas: Vec::new(),
    })?;
    let image = ferric_tests::os_image::build("bench-deploy")?;
    let size = std::fs::metadata(&image)?.len();
    println!(
        "## Deploy on a lab rack (TCG, {} MiB per node, 1 GiB disks; image: qcow2 {:.1} MiB holding a {} MiB disk)\n",
        args.memory_mib,
        size as f64 / 1048576.0,
        ferric_tests::os_image::DISK_BYTES >> 20
    );
    println!(
        "| nodes | provide: → available | deploy: power-cycled into PXE | → ramdisk called back | → image + config drive written, rebooting | → active | deploy → all active |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.nodes {
        let (clean, per, total) = rack(&args, &ramdisk, &image, n).await?;
        let worst = |i: usize| per.iter().map(|p| p[i]).fold(0.0, f64::max);
        println!(
            "| {n} | {clean:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s | **{total:.1} s** |",
            worst(0),
            worst(1),
            worst(2),
            worst(3)
        );
    }
    println!("\n(per phase: the slowest node; goal: three nodes active within 90 s of `deploy`)\n");
    if !args.no_cloud {
        let image = ferric_tests::cloud_image::build()?;
        let size = std::fs::metadata(&image)?.len();
        println!(
            "## A cloud image to a UEFI node (NVMe, 4096-byte sectors) and a BIOS node (virtio, 512) at once (TCG, 1024 MiB each, 4 GiB disks; image: Debian 12 qcow2 {:.0} MiB holding a {} MiB disk)\n",
            size as f64 / 1048576.0,
            ferric_tests::cloud_image::IMAGE_MIB
        );
        println!(
            "| node | deploy: power-cycled into PXE | → ramdisk called back | → image, config drive (and boot entry) written, rebooting | → active | → SSH answers | **deploy → SSH** |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (node, p, ssh, total) in cloud(&args, &ramdisk, &image).await? {
            println!(
                "| {node} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {ssh:.1} s | **{total:.1} s** |",
                p[0], p[1], p[2], p[3]
            );
        }
        println!();
    }
    println!("Published figures of other systems for the same phases (not measured here):\n");
    println!("| system | inspect | provision (deploy) | ramdisk boot |");
    println!("|---|---:|---:|---:|");
    println!("| metal3 (sample timings) | ~5 min | ~2 min | — |");
    println!("| Ironic CI (IPA ramdisk boot) | — | — | ~12 min |");
    Ok(())
}
