//! Image write benchmark: Ferric's pipeline (`ferric image write`, one process per write, as a
//! deploy runs it) against the reference tools on the same images, to the same loop device and
//! the same file, in one run.
//!
//! Images: a raw disk of `--size` (default 2 GiB) with about 25% data (1 MiB of data in every
//! 4 MiB, half of it compressible text, half random) and zeros between; the same as qcow2 and
//! as compressed qcow2; and a dense raw image of `--size / 4` for the device's own rate.
//! Each case runs `--runs` times per tool, alternating; the median and the spread (fastest and
//! slowest run) are reported, and each case's Ferric best is set against its **fastest**
//! reference. The references run in their fastest honest configurations beside their plain
//! ones: `qemu-img convert -t none -W -m 8` (O_DIRECT, out-of-order writes, 8 coroutines)
//! against Ferric's O_DIRECT writes and `-W -m 8` through the page cache against Ferric
//! `--buffered`; `dd` with `oflag=direct` and with `conv=sparse`; `bmaptool copy` with a bmap
//! made beforehand. Every tool ends with the data on stable storage (Ferric, dd and bmaptool
//! fsync; qemu-img does not flush, so `sync TARGET` follows it). The Ferric process's peak
//! RSS is sampled from /proc while it runs.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_tests::{bin, client, start_coordinator};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Virtual size of the test disk, MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Runs per tool and case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Work directory (needs about 2.5 × size free; on the disk under test).
    #[arg(long, default_value = "target/bench-images")]
    dir: PathBuf,
}

/// Fills `buf` with 1 MiB of data per 4 MiB: half text that compresses, half random.
fn data_block(buf: &mut [u8], seed: &mut u64) {
    let text =
        b"Ferric provisions datacenter machines: plans pushed over QUIC, images streamed to disk. ";
    for (i, page) in buf.chunks_mut(4096).enumerate() {
        if i % 2 == 0 {
            for (j, b) in page.iter_mut().enumerate() {
                *b = text[(j + i) % text.len()];
            }
        } else {
            for b in page.chunks_mut(8) {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let v = seed.to_le_bytes();
                b.copy_from_slice(&v[..b.len()]);
            }
        }
    }
}

fn make_sparse(path: &Path, size: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(size)?;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut block = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        data_block(&mut block, &mut seed);
        let n = (size - off).min(block.len() as u64) as usize;
        f.write_all_at(&block[..n], off)?;
        off += 4 << 20;
    }
    f.sync_all()?;
    Ok(())
}

fn make_dense(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; 4 << 20];
    let mut done = 0;
    while done < size {
        data_block(&mut block, &mut seed);
        f.write_all(&block)?;
        done += block.len() as u64;
    }
    f.sync_all()?;
    Ok(())
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Peak RSS (KiB) of a process, from /proc while it runs.
fn hwm(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs a shell command line; returns seconds and the peak RSS seen (KiB).
fn timed(cmdline: &str) -> Result<(f64, u64)> {
    let started = Instant::now();
    let mut child = Command::new("sh")
        .args(["-c", &format!("exec {cmdline}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut peak = 0;
    loop {
        if let Some(k) = hwm(child.id()) {
            peak = peak.max(k);
        }
        if let Some(status) = child.try_wait()? {
            let secs = started.elapsed().as_secs_f64();
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("`{cmdline}` failed: {}", err.trim());
            }
            return Ok((secs, peak));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

struct Row {
    case: String,
    tool: String,
    secs: f64,
    min: f64,
    max: f64,
    mib_s: f64,
    rss_mib: Option<f64>,
}

/// Median, fastest and slowest of `v` (not empty).
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let size = args.size_mib << 20;
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let ferric = bin("ferric")?;
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (raw, qcow, qcow_c, dense) = (
        p("disk.raw"),
        p("disk.qcow2"),
        p("disk-c.qcow2"),
        p("dense.raw"),
    );
    let dense_size = size / 4;

    eprintln!("building test images in {} …", dir.display());
    make_sparse(Path::new(&raw), size)?;
    make_dense(Path::new(&dense), dense_size)?;
    // bmaptool copies what a bmap names; the map is made with the image, as a user would.
    let bmap = p("disk.bmap");
    sh("bmaptool", &["create", "-o", &bmap, &raw])?;
    sh(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", &raw, &qcow],
    )?;
    sh(
        "qemu-img",
        &["convert", "-c", "-f", "raw", "-O", "qcow2", &raw, &qcow_c],
    )?;
    // The device's backing file is written in full once, so that no run pays for the
    // filesystem allocating its blocks.
    let backing = p("device.img");
    sh(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={backing}"),
            "bs=4M",
            &format!("count={}", size >> 22),
            "conv=fsync",
            "status=none",
        ],
    )?;
    let dev = Loop(
        sh("losetup", &["-f", "--show", &backing])?
            .trim()
            .to_owned(),
    );
    let d = dev.0.clone();
    let file_target = p("out.raw");
    let staging = p("staging.qcow2");

    // The coordinator's store serves the qcow2 for the HTTP case.
    let rt = tokio::runtime::Runtime::new()?;
    let coord_dir = tempfile::tempdir()?;
    let (coord, view) = rt.block_on(async {
        let coord = start_coordinator(&coord_dir.path().join("coord")).await?;
        let view = client(coord.api)
            .upload_image(Path::new(&qcow), "bench", Some("qcow2"), None, |_, _| {})
            .await?;
        anyhow::Ok((coord, view))
    })?;
    // The store's blob over HTTPS, read with the admin's token and the coordinator's CA pinned:
    // Ferric's CLI from a config file, curl from a header file (neither on a command line).
    let url = format!("{}{}", ferric_tests::base_url(coord.api), view.path);
    let ca = ferric_tests::ca_file(coord.api).context("the coordinator's CA")?;
    let token = ferric_tests::admin_token(coord.api).context("the admin token")?;
    let conf = coord_dir.path().join("bench.conf");
    ferric_coordinator::pki::write_private(
        &conf,
        format!(
            "api = \"{}\"\nca = \"{}\"\ntoken = \"{token}\"\n",
            ferric_tests::base_url(coord.api),
            ca.display()
        ),
    )?;
    let auth_header = coord_dir.path().join("bench.header");
    ferric_coordinator::pki::write_private(
        &auth_header,
        format!("Authorization: Bearer {token}\n"),
    )?;
    let checksum = format!("sha256:{}", view.sha256);
    let f = ferric.display();

    let q = |s: &str| format!("'{s}'");
    type Case = (String, u64, Vec<(String, String)>);
    // qemu-img convert does not flush its target (strace shows no fsync or fdatasync), so
    // `sync TARGET` follows it: every tool ends with the disk on stable storage, as Ferric
    // and dd conv=fsync do.
    let qemu = |flags: &str, fmt: &str, src: &str, dst: &str| {
        format!(
            "sh -c \"qemu-img convert {flags}-f {fmt} -O raw {} {} && sync {}\"",
            q(src),
            q(dst),
            q(dst)
        )
    };
    // qemu-img's three ways to a device: plain; out of order with 8 coroutines through the
    // page cache; and that with O_DIRECT on the target (its fastest here).
    const QEMU_DEV: [(&str, &str); 3] = [
        ("qemu-img convert -n", "-n "),
        ("qemu-img convert -n -W -m 8", "-n -W -m 8 "),
        ("qemu-img convert -n -t none -W -m 8", "-n -t none -W -m 8 "),
    ];
    let fw =
        |extra: &str, src: &str, dst: &str| format!("{f} image write {extra}{} {}", q(src), q(dst));
    let dd =
        |flags: &str, src: &str| format!("dd if={} of={} bs=4M {flags} status=none", q(src), q(&d));
    let t = |a: &str, b: String| (a.to_owned(), b);
    // A qcow2 image to the device: Ferric through O_DIRECT and the page cache, and qemu-img.
    let qcow2_to_device = |label: &str, src: &str| -> Case {
        let mut tools = vec![
            t("ferric", fw("", src, &d)),
            t("ferric --buffered", fw("--buffered ", src, &d)),
        ];
        tools.extend(QEMU_DEV.map(|(l, fl)| t(l, qemu(fl, "qcow2", src, &d))));
        (label.into(), size, tools)
    };
    let mut raw_tools = vec![
        t("ferric", fw("", &raw, &d)),
        t("ferric --buffered", fw("--buffered ", &raw, &d)),
        t("dd bs=4M oflag=direct", dd("oflag=direct conv=fsync", &raw)),
        t("dd bs=4M conv=sparse *", dd("conv=sparse,fsync", &raw)),
        t(
            "dd bs=4M oflag=direct conv=sparse *",
            dd("oflag=direct conv=sparse,fsync", &raw),
        ),
        t(
            "bmaptool copy --no-verify *",
            format!(
                "bmaptool -q copy --no-verify --bmap {} {} {}",
                q(&bmap),
                q(&raw),
                q(&d)
            ),
        ),
    ];
    raw_tools.extend(QEMU_DEV.map(|(l, fl)| t(l, qemu(fl, "raw", &raw, &d))));
    let cases: Vec<Case> = vec![
        ("raw → device".into(), size, raw_tools),
        qcow2_to_device("qcow2 → device", &qcow),
        qcow2_to_device("qcow2 (compressed) → device", &qcow_c),
        (
            "qcow2 over HTTP (store) → device".into(),
            size,
            vec![
                t(
                    "ferric (Range, sha256 checked)",
                    format!(
                        "{f} --config {} image write --checksum {checksum} {} {}",
                        q(&conf.display().to_string()),
                        q(&url),
                        q(&d)
                    ),
                ),
                t(
                    "curl, then qemu-img -t none -W -m 8",
                    format!(
                        "sh -c \"curl -sf --cacert {} -H @{} -o {} {} && qemu-img convert -n -t none -W -m 8 -f qcow2 -O raw {} {} && sync {} && rm -f {}\"",
                        q(&ca.display().to_string()),
                        q(&auth_header.display().to_string()),
                        q(&staging),
                        q(&url),
                        q(&staging),
                        q(&d),
                        q(&d),
                        q(&staging)
                    ),
                ),
            ],
        ),
        (
            "qcow2 → file".into(),
            size,
            vec![
                t("ferric", fw("", &qcow, &file_target)),
                t("qemu-img convert", qemu("", "qcow2", &qcow, &file_target)),
                t(
                    "qemu-img convert -W -m 8",
                    qemu("-W -m 8 ", "qcow2", &qcow, &file_target),
                ),
            ],
        ),
        (
            "dense raw → device".into(),
            dense_size,
            vec![
                t("ferric", fw("", &dense, &d)),
                t(
                    "dd bs=4M oflag=direct (device rate)",
                    dd("oflag=direct conv=fsync", &dense),
                ),
            ],
        ),
    ];

    let mut rows = Vec::new();
    for (case, bytes, tools) in &cases {
        eprintln!("{case} …");
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
        let mut rss = vec![0u64; tools.len()];
        // One untimed round warms the page cache with the source for every tool alike.
        for (_, cmdline) in tools {
            timed(cmdline)?;
        }
        for _ in 0..args.runs {
            for (i, (_, cmdline)) in tools.iter().enumerate() {
                // Each run starts from the same state: the source in the page cache, the
                // target's dirty pages written back.
                let _ = Command::new("sync").status();
                let (s, peak) = timed(cmdline)?;
                secs[i].push(s);
                rss[i] = rss[i].max(peak);
            }
        }
        for (i, (tool, _)) in tools.iter().enumerate() {
            let (m, min, max) = stats(secs[i].clone());
            rows.push(Row {
                case: case.clone(),
                tool: tool.clone(),
                secs: m,
                min,
                max,
                mib_s: *bytes as f64 / (1 << 20) as f64 / m,
                // A shell around a pipeline: its own RSS says nothing about the tools.
                rss_mib: (!tools[i].1.starts_with("sh -c")).then(|| rss[i] as f64 / 1024.0),
            });
        }
    }
    rt.block_on(coord.shutdown());

    println!(
        "\nimage writes: {} MiB disk (about 25% data), {} runs each, median; loop device {} over a file on {}",
        args.size_mib,
        args.runs,
        d,
        dir.display()
    );
    println!(
        "{:<34} {:<38} {:>8} {:>13} {:>9} {:>8} {:>16}",
        "case", "tool", "seconds", "min–max", "MiB/s", "RSS MiB", "ferric speedup"
    );
    let mut summary = Vec::new();
    for (case, _, _) in &cases {
        let of_case: Vec<&Row> = rows.iter().filter(|r| &r.case == case).collect();
        let ferric_best = of_case
            .iter()
            .filter(|r| r.tool.starts_with("ferric"))
            .map(|r| r.secs)
            .fold(f64::INFINITY, f64::min);
        let fastest_ref = of_case
            .iter()
            .filter(|r| !r.tool.starts_with("ferric"))
            .min_by(|a, b| a.secs.total_cmp(&b.secs));
        if let Some(best) = fastest_ref {
            summary.push(format!(
                "{case}: ferric {ferric_best:.2} s, fastest reference {} {:.2} s: {:.2}×",
                best.tool,
                best.secs,
                best.secs / ferric_best
            ));
        }
        for r in of_case {
            let ratio = if r.tool.starts_with("ferric") {
                String::new()
            } else {
                format!("{:.2}×", r.secs / ferric_best)
            };
            let rss = r
                .rss_mib
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<34} {:<38} {:>8.2} {:>13} {:>9.0} {:>8} {:>16}",
                r.case,
                r.tool,
                r.secs,
                format!("{:.2}–{:.2}", r.min, r.max),
                r.mib_s,
                rss,
                ratio
            );
        }
    }
    println!(
        "\n* skips zero blocks instead of zeroing them: the same disk here only because the device already held zeros (or this image) there"
    );
    println!(
        "\nagainst the fastest reference of each case (its median over Ferric's best median):"
    );
    for line in summary {
        println!("  {line}");
    }
    drop(dev);
    for f in [&raw, &qcow, &qcow_c, &dense, &backing, &file_target, &bmap] {
        let _ = std::fs::remove_file(f);
    }
    Ok(())
}
