//! Ramdisk benchmark. The release ramdisk is built (`ferric-ramdisk build`, zstd level 19) and
//! its size printed; the least memory it boots in is found by direct kernel boots under QEMU
//! (user-mode networking answers its DHCP); then, for each rack size, lab nodes are powered
//! on at once through their BMCs (boot device pxe) against a coordinator with boot services,
//! and every phase of each node's boot is timed from the coordinator's boot stages: power-on →
//! DHCP answer → script → kernel and initramfs sent → ramdisk enrolled → connected →
//! inspected. Published figures of other ramdisks are printed beside them (not measured here).

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::bmc::ipmi::IpmiClient;
use ferric_coordinator::boot_services::BootConfig;
use ferric_lab::UpOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
}

const STAGES: [&str; 7] = [
    "dhcp",
    "script",
    "kernel",
    "initramfs",
    "enrolled",
    "connected",
    "inspected",
];

fn build(args: &Args) -> Result<PathBuf> {
    let kernel =
        ferric_ramdisk::build::debian_kernel("linux-image-amd64", &args.work.join("kernel"))?;
    let out = args.work.join("ramdisk");
    let started = Instant::now();
    let b = ferric_ramdisk::build::build(&ferric_ramdisk::build::BuildOptions {
        binary: args.binary.clone(),
        kernel,
        out: out.clone(),
        level: 19,
        cas: Vec::new(),
    })?;
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "## Ramdisk (release build, zstd -19, built in {:.1} s)\n",
        started.elapsed().as_secs_f64()
    );
    println!("| part | size |");
    println!("|---|---:|");
    println!(
        "| kernel (Debian generic) | {:.1} MiB |",
        mib(b.kernel_bytes)
    );
    println!(
        "| initramfs, compressed ({} modules) | {:.1} MiB |",
        b.modules,
        mib(b.initramfs_bytes)
    );
    println!(
        "| initramfs, unpacked | {:.1} MiB |",
        mib(b.uncompressed_bytes)
    );
    println!(
        "| kernel + initramfs, what a node downloads | {:.1} MiB |",
        mib(b.kernel_bytes + b.initramfs_bytes)
    );
    if !b.missing.is_empty() {
        println!("\n(modules this kernel lacks: {})", b.missing.join(", "));
    }
    Ok(out)
}

/// Seconds from QEMU's start to the ramdisk's network line, booting it directly with `mib` MiB;
/// `None` when it did not get there within 60 s.
fn direct_boot(ramdisk: &Path, mib: u64, dir: &Path) -> Result<Option<f64>> {
    let console = dir.join(format!("console-{mib}.log"));
    let _ = std::fs::remove_file(&console);
    let started = Instant::now();
    let mut q = Command::new("qemu-system-x86_64")
        .args(ferric_lab::qemu::machine_args("tcg", mib))
        .arg("-kernel")
        .arg(ramdisk.join("vmlinuz"))
        .arg("-initrd")
        .arg(ramdisk.join("initramfs"))
        .args([
            "-append",
            "console=ttyS0 ferric.coordinator=10.0.2.2:1 ferric.ca=sha256:0000000000000000000000000000000000000000000000000000000000000000 ferric.token=b.x ferric.node=bench panic=-1",
            "-netdev",
            "user,id=n0",
            "-device",
            "e1000,netdev=n0",
            "-no-reboot",
            "-serial",
        ])
        .arg(format!("file:{}", console.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let mut got = None;
    while started.elapsed() < Duration::from_secs(60) {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("FERRIC-RAMDISK-NET") {
            got = Some(started.elapsed().as_secs_f64());
            break;
        }
        if text.contains("Kernel panic") || text.contains("Out of memory") {
            break;
        }
        if q.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = q.kill();
    let _ = q.wait();
    Ok(got)
}

fn memory(ramdisk: &Path, dir: &Path) -> Result<()> {
    println!("\n## Memory: direct kernel boot to the ramdisk's network (TCG)\n");
    println!("| memory | QEMU start → ramdisk has an address |");
    println!("|---:|---:|");
    let mut least = None;
    for mib in [512u64, 256, 192, 160, 128, 112, 96] {
        let r = direct_boot(ramdisk, mib, dir)?;
        println!(
            "| {mib} MiB | {} |",
            r.map_or("did not boot".to_owned(), |s| format!("{s:.1} s"))
        );
        match r {
            Some(_) => least = Some(mib),
            None => break,
        }
    }
    println!(
        "\nLeast memory it booted in: {}",
        least.map_or("none of these".into(), |m| format!("{m} MiB"))
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn rack_boot(n: u32, args: &Args, ramdisk: &Path) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let name = format!("rb{}", n);
    let rack = ferric_lab::up(&UpOptions {
        name: name.clone(),
        dir: dir.path().join(&name),
        nodes: n,
        memory_mib: args.memory_mib,
        disk_bytes: 256 << 20,
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
        let mut cfg = ferric_tests::coordinator_config(&dir.path().join("coord"));
        cfg.listen = "0.0.0.0:0".parse()?;
        let mut boot = BootConfig::new(&rack.prov_veth(), ramdisk.to_owned());
        boot.http_port = 0;
        cfg.boot = Some(boot);
        let coord = ferric_tests::start(cfg).await?;
        let agent =
            ferric_tests::management_agent(&coord, dir.path(), IpmiClient::default(), None).await?;
        for node in &rack.nodes {
            ferric_tests::enroll_lab_node(coord.api, &rack, node).await?;
        }
        let c = ferric_tests::client(coord.api);
        // Power on every node at once; each node's clock starts when its power step was sent.
        let mut on = Vec::new();
        for node in &rack.nodes {
            let t = ferric_coordinator::now_ms();
            let _: serde_json::Value = c
                .post(
                    &format!("/v1/nodes/{}/power", node.name),
                    &serde_json::json!({"action": "on"}),
                )
                .await?;
            on.push(t);
        }
        let started = Instant::now();
        let mut marks: Vec<Vec<(String, i64)>> = vec![vec![]; rack.nodes.len()];
        loop {
            let mut done = 0;
            for (i, node) in rack.nodes.iter().enumerate() {
                let d: serde_json::Value = c.get(&format!("/v1/nodes/{}", node.name)).await?;
                marks[i] = d["boot"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| Some((m["stage"].as_str()?.to_owned(), m["at_ms"].as_i64()?)))
                    .collect();
                if marks[i].iter().any(|(s, _)| s == "inspected") {
                    done += 1;
                }
            }
            if done == rack.nodes.len() {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("not every node was inspected within 10 minutes: {marks:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Seconds from power-on to each stage (its first mark), per node.
        let per_node: Vec<Vec<f64>> = marks
            .iter()
            .zip(&on)
            .map(|(m, t0)| {
                STAGES
                    .iter()
                    .map(|s| {
                        m.iter()
                            .find(|(x, at)| x == s && *at >= *t0)
                            .map_or(f64::NAN, |(_, at)| (at - t0) as f64 / 1000.0)
                    })
                    .collect()
            })
            .collect();
        println!(
            "\n## {n} node(s) powered on at once (TCG, {} MiB each)\n",
            args.memory_mib
        );
        println!("| phase | median | slowest node |");
        println!("|---|---:|---:|");
        let mut prev = vec![0.0; per_node.len()];
        let names = [
            "power-on → DHCP answer",
            "→ iPXE script",
            "→ kernel sent",
            "→ initramfs sent",
            "→ ramdisk enrolled (kernel boot, modules, DHCP)",
            "→ link connected",
            "→ inspected",
        ];
        for (k, label) in names.iter().enumerate() {
            let d: Vec<f64> = per_node.iter().zip(&prev).map(|(t, p)| t[k] - p).collect();
            println!(
                "| {label} | {:.1} s | {:.1} s |",
                median(d.clone()),
                d.iter().copied().fold(f64::MIN, f64::max)
            );
            prev = per_node.iter().map(|t| t[k]).collect();
        }
        let total: Vec<f64> = per_node.iter().map(|t| t[6]).collect();
        println!(
            "| **power-on → inspected** | **{:.1} s** | **{:.1} s** |",
            median(total.clone()),
            total.iter().copied().fold(f64::MIN, f64::max)
        );
        agent.stop().await?;
        coord.shutdown().await;
        Ok(())
    }
    .await;
    let _ = ferric_lab::down(&rack.dir);
    result
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work)?;
    let ramdisk = build(&args)?;
    memory(&ramdisk, &args.work)?;
    let rt = tokio::runtime::Runtime::new()?;
    for n in &args.nodes {
        rt.block_on(rack_boot(*n, &args, &ramdisk))?;
    }
    println!("\n## Published figures of other deploy ramdisks (not measured here)\n");
    println!("| ramdisk | image | memory | boot |");
    println!("|---|---:|---:|---|");
    println!(
        "| Ironic Python Agent (CI images) | hundreds of MB | ≥ 1.5 GB recommended | ~12 min in Ironic's CI |"
    );
    println!("| Tinkerbell HookOS | ~180 MB compressed | — | — |");
    println!("| Fedora CoreOS live initramfs | ~600 MiB | — | — |");
    Ok(())
}
