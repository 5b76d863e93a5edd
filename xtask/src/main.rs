//! Project tasks, run as `cargo xtask <task>`:
//!
//! * `demo`  — Ferric's main job on the embedded default: a coordinator on SQLite, three local
//!   agents enrolled with bootstrap tokens, one plan applied to all three, events and live
//!   telemetry printed;
//! * `test`  — every check CI runs: formatting, clippy, a short fuzz run of every decoder, and
//!   all test tiers;
//! * `setup` — only the installing `test` does first (Debian packages, VirtualBMC);
//! * `bench` — the benchmarks (see docs/benchmarks.md).
//!
//! Each task installs what it needs on a fresh machine first.

mod setup;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the demo: coordinator, three agents, a plan, events, telemetry.
    Demo {
        /// Keep the coordinator and agents running until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Run every check and test tier.
    Test {
        /// Seconds each fuzz target runs (0 skips fuzzing).
        #[arg(long, default_value_t = 20)]
        fuzz_secs: u64,
    },
    /// Install what the tests need (Debian packages, VirtualBMC) without running them.
    Setup,
    /// Run a benchmark.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Guest create-to-running latency against virsh, and agent RSS/CPU, on this host's libvirtd.
    Guests {
        /// Guest counts to create at once.
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        guests: Vec<usize>,
    },
    /// Image writes (raw, qcow2, compressed qcow2, over HTTP) to a loop device and a file,
    /// against dd, qemu-img and curl on the same images.
    Images {
        /// Virtual size of the test disk, MiB.
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
        /// Runs per tool and case (median and spread reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Lab racks: bring-up time, memory and CPU per idle node, how many nodes fit.
    Lab {
        /// Rack sizes.
        #[arg(long, value_delimiter = ',', default_value = "5,20")]
        nodes: Vec<u32>,
    },
    /// A power-status sweep over a lab rack of Redfish BMCs, Ferric's client (pinned TLS,
    /// sessions) against curl with kept connections at the same parallelism.
    Redfish {
        /// BMCs.
        #[arg(long, default_value_t = 50)]
        bmcs: u32,
        /// Kept sweeps after the first.
        #[arg(long, default_value_t = 20)]
        sweeps: u32,
    },
    /// Power-status sweep over emulated BMCs: Ferric against one ipmitool process per call.
    Bmc {
        /// Emulated BMCs.
        #[arg(long, default_value_t = 50)]
        bmcs: usize,
        /// Sweeps per method (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The deploy ramdisk: its size, the least memory it boots in, and power-on to inspected
    /// per phase for lab racks booting it from the network.
    Ramdisk {
        /// Rack sizes.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        nodes: Vec<u32>,
    },
    /// The bare-metal deploy: lab racks provided, powered off and deployed at once, each
    /// phase timed from the coordinator's transitions (power cycle, call back, image
    /// written, active).
    Deploy {
        /// Rack sizes.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        nodes: Vec<u32>,
    },
    /// Push-to-ack latency and coordinator memory per agent over loopback QUIC.
    Link {
        /// Agent counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        agents: Vec<usize>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn step(title: &str) {
    println!("\n==> {title}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the demo's libvirt pool (scaffolding; a previous run may have left it defined).
fn forget_demo_pool() {
    for verb in ["pool-destroy", "pool-undefine"] {
        let _ = Command::new("virsh")
            .args(["-c", "qemu:///system", verb, "ferric-demo"])
            .output();
    }
}

/// Builds the binaries of `packages` in release mode (benchmarks measure those).
fn build_release(packages: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--bins"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    run(&mut cmd)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// What this host lacks for a part of the demo: missing programs, and root (namespaces,
/// bridges, taps). Empty when the part can run; a part that can run and fails is an error.
fn host_lacks(programs: &[&str]) -> Vec<String> {
    let mut lacks: Vec<String> = programs
        .iter()
        .filter(|p| !have(p))
        .map(|p| format!("`{p}`"))
        .collect();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        lacks.push("root (network namespaces, bridges and taps)".into());
    }
    lacks
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Demo { keep } => demo(keep),
        Task::Test { fuzz_secs } => test(fuzz_secs),
        Task::Setup => setup(),
        Task::Bench { which } => bench(which),
    }
}

/// Builds what a benchmark measures in release mode and runs it with its options.
fn bench(which: Bench) -> Result<()> {
    // `--flag v` for each value of a list option.
    fn each<T: ToString>(flag: &str, values: Vec<T>) -> Vec<String> {
        values
            .into_iter()
            .flat_map(|v| [flag.to_owned(), v.to_string()])
            .collect()
    }
    let release = root().join("target/release");
    // The packages to build, the benchmark binary, its arguments, and whether it drives system
    // tools (the link benchmark runs on loopback alone).
    let (packages, binary, args, system): (&[&str], &str, Vec<String>, bool) = match which {
        Bench::Guests { guests } => (
            &["ferric-agent", "ferric-tests"],
            "ferric-bench-guests",
            each("--guests", guests),
            true,
        ),
        Bench::Images { size_mib, runs } => (
            &["ferric", "ferric-tests"],
            "ferric-bench-images",
            vec![
                "--size-mib".into(),
                size_mib.to_string(),
                "--runs".into(),
                runs.to_string(),
            ],
            true,
        ),
        Bench::Lab { nodes } => (
            &["ferric", "ferric-tests"],
            "ferric-bench-lab",
            each("--nodes", nodes),
            true,
        ),
        Bench::Bmc { bmcs, rounds } => (
            &["ferric-tests"],
            "ferric-bench-bmc",
            vec![
                "--bmcs".into(),
                bmcs.to_string(),
                "--rounds".into(),
                rounds.to_string(),
            ],
            true,
        ),
        Bench::Redfish { bmcs, sweeps } => (
            &["ferric", "ferric-tests"],
            "ferric-bench-redfish",
            vec![
                "--bmcs".into(),
                bmcs.to_string(),
                "--sweeps".into(),
                sweeps.to_string(),
                "--ferric".into(),
                release.join("ferric").display().to_string(),
            ],
            true,
        ),
        Bench::Deploy { nodes } => (
            &["ferric", "ferric-ramdisk", "ferric-tests"],
            "ferric-bench-deploy",
            [
                vec![
                    "--binary".into(),
                    release.join("ferric-ramdisk").display().to_string(),
                    "--work".into(),
                    root().join("target/bench-deploy").display().to_string(),
                ],
                each("--nodes", nodes),
            ]
            .concat(),
            true,
        ),
        Bench::Ramdisk { nodes } => (
            &["ferric", "ferric-ramdisk", "ferric-tests"],
            "ferric-bench-ramdisk",
            [
                vec![
                    "--binary".into(),
                    release.join("ferric-ramdisk").display().to_string(),
                    "--work".into(),
                    root().join("target/bench-ramdisk").display().to_string(),
                ],
                each("--nodes", nodes),
            ]
            .concat(),
            true,
        ),
        Bench::Link { agents } => (
            &["ferric", "ferric-tests"],
            "ferric-bench-link",
            [
                vec![
                    "--ferric".into(),
                    release.join("ferric").display().to_string(),
                ],
                each("--agents", agents),
            ]
            .concat(),
            false,
        ),
    };
    if system {
        setup::packages()?;
    }
    build_release(packages)?;
    run(Command::new(release.join(binary)).args(args))
}

fn setup() -> Result<()> {
    step(
        "system packages (Debian), VirtualBMC, sushy-tools, DMTF's Redfish validator and the API test tools (PyPI)",
    );
    setup::packages()?;
    setup::virtualbmc(
        &root().join("target/vbmc-venv"),
        &root().join("tests/python/vbmc-requirements.txt"),
    )?;
    setup::sushy_tools(
        &root().join("target/sushy-venv"),
        &root().join("tests/python/sushy-requirements.txt"),
    )?;
    setup::redfish_validator(
        &root().join("target/validator-venv"),
        &root().join("tests/python/validator-requirements.txt"),
    )?;
    setup::api_tools(
        &root().join("target/api-venv"),
        &root().join("tests/python/api-requirements.txt"),
    )
}

/// Space a clean run of `test` takes on this kind of machine, measured: about 7 GiB of build
/// output, 2 GiB for the fuzz builds, 1 GiB of images and rack disks, and room for mmdebstrap.
const TEST_DISK_GIB: u64 = 14;

/// Free space, in GiB, on the file system holding `path` (from `df`, which every Debian has).
fn free_gib(path: &Path) -> Result<u64> {
    let out = output(Command::new("df").args(["-BG", "--output=avail"]).arg(path))?;
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches('G').parse().ok())
        .with_context(|| format!("cannot read df's answer: {out:?}"))
}

fn test(fuzz_secs: u64) -> Result<()> {
    let started = Instant::now();
    // A run that fills the disk fails deep inside a linker with "No space left on device":
    // say up front what there is and what a run takes.
    let free = free_gib(&root())?;
    println!(
        "{free} GiB free under {} (a clean run takes about {TEST_DISK_GIB} GiB)",
        root().display()
    );
    if free < TEST_DISK_GIB {
        println!(
            "warning: less free space than a clean run takes; `cargo clean` or free the disk if a step fails with \"No space left on device\""
        );
    }
    setup()?;
    step("formatting (cargo fmt --check)");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("lints (cargo clippy --all-targets -- -D warnings)");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("build the binaries the process-level tests start");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    if fuzz_secs > 0 {
        fuzz(fuzz_secs)?;
    } else {
        step("fuzzing skipped (--fuzz-secs 0): no decoder was fuzzed in this run");
    }
    step("all test tiers (unit, protocol simulation, in-process system, real processes)");
    if have("cargo-nextest") {
        run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))?;
    } else {
        run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    }
    println!(
        "\nall checks passed in {:.0?}{}",
        started.elapsed(),
        if fuzz_secs > 0 {
            ""
        } else {
            " (fuzzing skipped)"
        }
    );
    Ok(())
}

fn fuzz(secs: u64) -> Result<()> {
    step(&format!(
        "fuzz every decoder of untrusted bytes ({secs}s each)"
    ));
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !nightly {
        bail!(
            "fuzzing needs the nightly toolchain (cargo fuzz uses -Zsanitizer); install it with `rustup toolchain install nightly`, or pass --fuzz-secs 0"
        );
    }
    if !have("cargo-fuzz") {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let targets = output(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "list"])
            .current_dir(root().join("fuzz")),
    )?;
    let logs = root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    for t in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        // libFuzzer prints a line per new input; keep that in a log and show the outcome.
        let log = logs.join(format!("{t}.log"));
        let file = std::fs::File::create(&log)?;
        let status = Command::new("cargo")
            .args([
                "+nightly",
                "fuzz",
                "run",
                t,
                "--",
                &format!("-max_total_time={secs}"),
            ])
            .current_dir(root().join("fuzz"))
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .with_context(|| format!("cannot run cargo fuzz for {t}"))?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if !status.success() {
            for l in &lines[lines.len().saturating_sub(80)..] {
                println!("{l}");
            }
            bail!("fuzz target {t} failed (full log: {})", log.display());
        }
        let done = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("Done "))
            .copied()
            .unwrap_or("finished");
        println!("fuzz target {t}: {done}");
    }
    Ok(())
}

/// Enrolls an agent `(name, role)` and returns its state directory.
type EnrollFn<'a> = dyn Fn(&str, &str) -> Result<PathBuf> + 'a;
/// Starts `ferric-agent run ARGS` for `(name, state, args)`.
type SpawnFn<'a> = dyn Fn(&str, &Path, &[&str]) -> Result<Kill> + 'a;

/// Boots a real guest on this host through a hypervisor agent with the libvirt driver.
/// Returns the agent (to stop with the others), or `None` when this host cannot run guests.
fn demo_guest(
    ferric_bin: &Path,
    api: &str,
    base: &Path,
    enroll: &EnrollFn<'_>,
    spawn: &SpawnFn<'_>,
) -> Result<Option<Kill>> {
    step("a hypervisor host: real libvirtd, a Linux bridge, and a guest placed by the coordinator");
    let testbed = root().join("target/debug/ferric-testbed");
    let lacks = host_lacks(&["libvirtd", "virsh", "qemu-system-x86_64"]);
    if !lacks.is_empty() {
        println!(
            "skipping the guest part: this host lacks {}",
            lacks.join(", ")
        );
        return Ok(None);
    }
    // Everything it needs is here: libvirtd not starting is a failure, not a skip.
    run(Command::new(&testbed).arg("libvirtd")).context("libvirtd did not start")?;
    let paths = output(Command::new(&testbed).arg("guest-image"))?;
    let get = |k: &str| {
        paths
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_owned)
            .context("guest image paths")
    };
    let (kernel, initrd) = (get("kernel=")?, get("initrd=")?);
    // The demo's pool is scaffolding: forget one a previous run left defined.
    forget_demo_pool();
    let state = enroll("rack1-hv1", "hypervisor")?;
    let pool = format!("ferric-demo={}", base.join("pool").display());
    // Plans may name the guest's kernel and initrd where the testbed built them.
    let kernel_dir = Path::new(&kernel)
        .parent()
        .context("the guest kernel's directory")?
        .display()
        .to_string();
    let hv = spawn(
        "rack1-hv1",
        &state,
        &[
            "--driver",
            "libvirt",
            "--pool",
            &pool,
            "--shutdown-grace",
            "5s",
            "--allow-path",
            &kernel_dir,
        ],
    )?;
    let bridge_plan = base.join("bridge.yaml");
    std::fs::write(
        &bridge_plan,
        "steps:\n  - ensure_bridge: { name: br-demo }\n",
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ferric(
        ferric_bin,
        api,
        &["node", "show", "rack1-hv1", "-o", "json"],
    )
    .is_ok_and(|j| j.contains("\"connected\": true"))
    {
        if Instant::now() > deadline {
            bail!(
                "the hypervisor agent did not connect; see {}",
                base.join("rack1-hv1.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = apply_plan(ferric_bin, api, &bridge_plan, "rack1-hv1")?;
    print!(
        "{}",
        ferric(ferric_bin, api, &["plan", "status", &id, "--wait", "30s"])?
    );
    // Placement reads the bridge from the host's telemetry: give it a sample.
    std::thread::sleep(Duration::from_secs(2));
    println!("\n$ ferric host list");
    print!("{}", ferric(ferric_bin, api, &["host", "list"])?);
    println!(
        "\n$ ferric guest create --name demo-guest --vcpus 1 --memory 128M --disk 64M --net br-demo --pool ferric-demo --kernel … --initrd …"
    );
    let created = ferric(
        ferric_bin,
        api,
        &[
            "guest",
            "create",
            "--name",
            "demo-guest",
            "--vcpus",
            "1",
            "--memory",
            "128M",
            "--disk",
            "64M",
            "--net",
            "br-demo",
            "--pool",
            "ferric-demo",
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--cmdline",
            "console=ttyS0 panic=-1",
            "-o",
            "json",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&created)?;
    let plan = v["plan"].to_string();
    println!(
        "placed on {}; plan {plan}",
        v["host"].as_str().unwrap_or("?")
    );
    print!(
        "{}",
        ferric(ferric_bin, api, &["plan", "status", &plan, "--wait", "2m"])?
    );
    let console = Path::new("/var/log/ferric/guests/demo-guest.log");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        if text.contains("FERRIC-GUEST-UP") {
            println!("\nthe guest's serial console ({}):", console.display());
            for l in text.lines().filter(|l| l.starts_with("FERRIC")).take(3) {
                println!("  {l}");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the guest did not print its marker; see {}",
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    println!("\n$ ferric guest list");
    print!("{}", ferric(ferric_bin, api, &["guest", "list"])?);
    println!("\n$ ferric guest delete demo-guest");
    let deleted: serde_json::Value = serde_json::from_str(&ferric(
        ferric_bin,
        api,
        &["guest", "delete", "demo-guest", "-o", "json"],
    )?)?;
    print!(
        "{}",
        ferric(
            ferric_bin,
            api,
            &[
                "plan",
                "status",
                &deleted["plan"].to_string(),
                "--wait",
                "1m"
            ]
        )?
    );
    std::fs::write(
        &bridge_plan,
        "steps:\n  - delete_bridge: { name: br-demo }\n",
    )?;
    let id = apply_plan(ferric_bin, api, &bridge_plan, "rack1-hv1")?;
    ferric(ferric_bin, api, &["plan", "status", &id, "--wait", "30s"])?;
    forget_demo_pool();
    let _ = std::fs::remove_file(console);
    println!("guest, volume and bridge removed");
    Ok(Some(hv))
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ferric plan apply -f FILE --node NODE`; returns the plan id.
/// The lab part: a rack of two virtual bare-metal nodes behind emulated BMCs, enrolled with
/// the coordinator and powered on through a management agent that drives their BMCs.
/// Brings up the demo's lab rack and builds the ramdisk its nodes boot; the ramdisk's
/// directory, or `None` (the missing capability printed) where this host cannot run a rack.
/// A rack or ramdisk that can be made here and fails is an error (the rack is taken down).
fn demo_rack_and_ramdisk(
    ferric_bin: &Path,
    bins: &Path,
    lab_root: &Path,
    base: &Path,
) -> Result<Option<PathBuf>> {
    step("a lab rack: two virtual bare-metal nodes (QEMU) behind emulated BMCs (ipmi_sim)");
    let lacks = host_lacks(&["ipmi_sim", "qemu-system-x86_64", "ip"]);
    if !lacks.is_empty() {
        println!(
            "skipping the lab part: this host lacks {}",
            lacks.join(", ")
        );
        return Ok(None);
    }
    let down = || {
        let _ = run(Command::new(ferric_bin)
            .env("FERRIC_LAB_ROOT", lab_root)
            .args(["lab", "--name", "demo", "down"]));
    };
    let up = output(
        Command::new(ferric_bin)
            .env("FERRIC_LAB_ROOT", lab_root)
            .args([
                "lab", "--name", "demo", "up", "--nodes", "2", "--memory", "1G",
            ])
            // A server of today (UEFI, NVMe of 4 KiB sectors) beside one of yesterday (BIOS,
            // a 512-byte virtio disk).
            .args([
                "--disk",
                "4G",
                "--firmware",
                "uefi,bios",
                "--disk-bus",
                "nvme,virtio",
                "--sector-size",
                "4096,512",
            ]),
    );
    if let Err(e) = up {
        down();
        return Err(e.context("the lab rack did not come up"));
    }
    step("build the deploy ramdisk (Debian's kernel + an initramfs whose /init is ferric-ramdisk)");
    let dir = base.join("ramdisk");
    match output(
        Command::new(bins.join("ferric-ramdisk"))
            .arg("build")
            .arg("--out")
            .arg(&dir)
            .arg("--cache")
            .arg(root().join("target/node"))
            .args(["--level", "3"]),
    ) {
        Ok(built) => {
            print!("{built}");
            Ok(Some(dir))
        }
        Err(e) => {
            down();
            Err(e.context("the deploy ramdisk was not built"))
        }
    }
}

fn demo_lab(
    ferric_bin: &Path,
    api: &str,
    lab_root: &Path,
    netboot: bool,
    enroll: &EnrollFn<'_>,
    spawn: &SpawnFn<'_>,
) -> Result<Option<Kill>> {
    if !lab_root.join("demo/rack.json").exists() {
        return Ok(None);
    }
    let lab = |args: &[&str]| -> Result<String> {
        output(
            Command::new(ferric_bin)
                .env("FERRIC_API", api)
                .env("FERRIC_CONFIG", demo_conf())
                .env("FERRIC_LAB_ROOT", lab_root)
                .args(["lab", "--name", "demo"])
                .args(args),
        )
    };
    print!("{}", lab(&["status"])?);
    let state = enroll("rack1-mgmt", "management")?;
    // Allowed the rack's directory: it tails the nodes' serial consoles there.
    let consoles = std::fs::canonicalize(lab_root)?.display().to_string();
    let mgmt = spawn(
        "rack1-mgmt",
        &state,
        &[
            "--driver",
            "bmc",
            "--bmc-poll",
            "2s",
            "--console-dir",
            &consoles,
        ],
    )?;
    step("register the rack's nodes with the coordinator (BMC address, password, MAC)");
    print!("{}", lab(&["enroll", "--via", "rack1-mgmt"])?);
    let deadline = Instant::now() + Duration::from_secs(20);
    let connected = || -> Result<bool> {
        let nodes: serde_json::Value =
            serde_json::from_str(&ferric(ferric_bin, api, &["node", "list", "-o", "json"])?)?;
        Ok(nodes.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["name"] == "rack1-mgmt" && n["connected"] == true)
        }))
    };
    while !connected()? {
        if Instant::now() > deadline {
            bail!("the management agent did not connect");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if netboot {
        demo_deploy(ferric_bin, api, lab_root)?;
    } else {
        step("power demo-n0 on through coordinator → agent → BMC → QEMU (no ramdisk to boot here)");
        for args in [
            &["node", "power", "on", "demo-n0"][..],
            &["node", "power", "status", "demo-n1"][..],
        ] {
            println!("$ ferric {}", args.join(" "));
            print!("{}", ferric(ferric_bin, api, args)?);
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    print!("{}", lab(&["status"])?);
    print!("{}", ferric(ferric_bin, api, &["node", "list"])?);
    // A bare-metal node's telemetry is what the management agent reads from its BMC.
    println!("$ ferric telemetry watch demo-n0 --count 3");
    print!(
        "{}",
        ferric(
            ferric_bin,
            api,
            &["telemetry", "watch", "demo-n0", "--count", "3"]
        )?
    );
    println!("$ ferric node power off demo-n0");
    print!(
        "{}",
        ferric(ferric_bin, api, &["node", "power", "off", "demo-n0"])?
    );
    Ok(Some(mgmt))
}

/// The bare-metal lifecycle on the demo rack: manage, inspect (one network boot into the
/// ramdisk), provide (cleaned by the resident ramdisk), give each node a static address, deploy
/// a real cloud image (Debian 12) to both at once with an SSH key, and log in to each.
fn demo_deploy(ferric_bin: &Path, api: &str, lab_root: &Path) -> Result<()> {
    let nodes = ["demo-n0", "demo-n1"];
    let run = |args: &[&str]| -> Result<()> {
        println!("$ ferric {}", args.join(" "));
        print!("{}", ferric(ferric_bin, api, args)?);
        Ok(())
    };
    let with_nodes = |verb: &[&str], extra: &[&str]| -> Vec<String> {
        verb.iter()
            .chain(nodes.iter())
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run_all = |verb: &[&str], extra: &[&str]| -> Result<()> {
        let args = with_nodes(verb, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    };
    step(
        "a cloud image for the nodes: Debian 12 with cloud-init and OpenSSH, GPT for UEFI and BIOS (built from the Debian archive once, then cached), into the image store",
    );
    let testbed = root().join("target/debug/ferric-testbed");
    let image = output(Command::new(&testbed).arg("cloud-image"))?;
    run(&["image", "upload", image.trim(), "--name", "debian-12"])?;
    step(
        "the lifecycle: manage → inspect (network boot into the ramdisk) → provide (clean) → deploy",
    );
    run_all(&["node", "manage"], &[])?;
    run_all(
        &["node", "wait"],
        &["--state", "manageable", "--timeout", "2m"],
    )?;
    run_all(&["node", "inspect"], &[])?;
    run_all(
        &["node", "wait"],
        &["--state", "manageable", "--timeout", "5m"],
    )?;
    run_all(&["node", "provide"], &[])?;
    run_all(
        &["node", "wait"],
        &["--state", "available", "--timeout", "5m"],
    )?;
    // Each node's address on the rack's provisioning network, which this host reaches.
    let rack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab_root.join("demo/rack.json"))?)?;
    let subnet = rack["subnet"].as_u64().context("rack.json has no subnet")?;
    let gateway = format!("10.248.{subnet}.1");
    let mut addresses = vec![];
    for (i, n) in nodes.iter().enumerate() {
        let mac = rack["nodes"][i]["mac"]
            .as_str()
            .context("rack.json has no MAC")?;
        let address = format!("10.248.{subnet}.{}", 20 + i);
        let cidr = format!("{address}/24");
        run(&[
            "node",
            "port",
            n,
            mac,
            "--address",
            &cidr,
            "--gateway",
            &gateway,
            "--dns",
            &gateway,
        ])?;
        addresses.push(address);
    }
    let key = root().join(".ferric/demo/deploy_key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferric-demo", "-f"])
            .arg(&key),
    )?;
    let public = key.with_extension("pub");
    let deployed = Instant::now();
    run_all(
        &["node", "deploy"],
        &[
            "--image",
            "debian-12",
            "--ssh-key",
            public.to_str().unwrap_or_default(),
        ],
    )?;
    run_all(
        &["node", "wait"],
        &["--state", "active", "--timeout", "10m"],
    )?;
    // Each node boots Debian from its own disk; cloud-init gives it its name, address and
    // key from the config drive the ramdisk wrote.
    let deadline = Instant::now() + Duration::from_secs(600);
    for address in &addresses {
        let login = format!("debian@{address}");
        let cmd = "hostname; ip -br -4 addr show scope global; findmnt -no SOURCE,SIZE /; [ -d /sys/firmware/efi ] && echo booted by UEFI || echo booted by BIOS";
        loop {
            let out = Command::new("ssh")
                .arg("-i")
                .arg(&key)
                .args([
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "ConnectTimeout=3",
                    "-o",
                    "LogLevel=ERROR",
                    &login,
                    cmd,
                ])
                .output()?;
            if out.status.success() {
                println!(
                    "$ ssh -i {} {login} '…'   ({:.0} s after deploy)\n{}",
                    key.display(),
                    deployed.elapsed().as_secs_f64(),
                    String::from_utf8_lossy(&out.stdout)
                );
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{login} did not answer SSH; see the consoles in {}",
                    lab_root.join("demo").display()
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    run(&["node", "show", "demo-n0"])?;
    // The same console through the coordinator: the agent driving the BMCs tails it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tail = ferric(
            ferric_bin,
            api,
            &["node", "console", "demo-n0", "-n", "1000"],
        )?;
        if let Some(line) = tail.lines().find(|l| l.contains("demo-n0 login:")) {
            println!("$ ferric node console demo-n0   (through agent rack1-mgmt)\n… {line}");
            break;
        }
        if Instant::now() > deadline {
            bail!("ferric node console demo-n0 does not show the deployed OS's login prompt");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn apply_plan(ferric_bin: &Path, api: &str, file: &Path, node: &str) -> Result<String> {
    let out = ferric(
        ferric_bin,
        api,
        &[
            "plan",
            "apply",
            "-f",
            file.to_str().unwrap_or_default(),
            "--node",
            node,
            "-o",
            "json",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("plan apply output")?;
    v[0]["id"]
        .as_u64()
        .map(|id| id.to_string())
        .context("plan apply returned no id")
}

fn terminate(k: &mut Kill) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(k.0.id().to_string())
        .status();
    let _ = k.0.wait();
}

/// The demo coordinator's client configuration with its first admin token.
fn demo_conf() -> PathBuf {
    root().join(".ferric/demo/coordinator/admin.conf")
}

fn ferric(bin: &Path, api: &str, args: &[&str]) -> Result<String> {
    output(
        Command::new(bin)
            .env("FERRIC_API", api)
            .env("FERRIC_CONFIG", demo_conf())
            .args(args),
    )
}

/// The coordinator at `api` serves its dashboard's page and script (read with curl, trusting
/// only the coordinator's CA).
fn dashboard_answers(api: &str, ca: &Path) -> Result<()> {
    for (path, want) in [("/", "<title>Ferric</title>"), ("/ui/app.js", "/v1/watch")] {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg(format!("{api}{path}"))
            .output()
            .context("cannot run curl")?;
        let body = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !body.contains(want) {
            bail!(
                "GET {path}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

fn demo(keep: bool) -> Result<()> {
    step("system packages (Debian)");
    setup::packages()?;
    step("build Ferric");
    run(cargo().args([
        "build",
        "--bins",
        "-p",
        "ferric",
        "-p",
        "ferric-agent",
        "-p",
        "ferric-tests",
        "-p",
        "ferric-ramdisk",
        // The demo's rack: `ferric lab`, which the production binary leaves out.
        "--features",
        "ferric/lab",
    ]))?;
    let bins = root().join("target/debug");
    let ferric_bin = bins.join("ferric");
    let agent_bin = bins.join("ferric-agent");
    let base = root().join(".ferric/demo");
    if base.exists() {
        std::fs::remove_dir_all(&base)
            .with_context(|| format!("cannot clear {}", base.display()))?;
    }
    std::fs::create_dir_all(&base)?;
    let (quic, api_addr) = ("127.0.0.1:7443", "127.0.0.1:7180");
    let api = format!("https://{api_addr}");

    // The lab rack comes first: the coordinator's boot services listen on its provisioning
    // link, and its nodes boot Ferric's ramdisk from them.
    let lab_root = base.join("lab");
    let ramdisk = demo_rack_and_ramdisk(&ferric_bin, &bins, &lab_root, &base)?;

    step(&format!(
        "start the coordinator (SQLite store in {})",
        base.join("coordinator").display()
    ));
    let coord_log = std::fs::File::create(base.join("coordinator.log"))?;
    let mut coord_cmd = Command::new(&ferric_bin);
    coord_cmd
        .args(["coordinator", "--data-dir"])
        .arg(base.join("coordinator"))
        .args(["--api-listen", api_addr]);
    match &ramdisk {
        Some(dir) => {
            // Ramdisks dial it on the provisioning link.
            coord_cmd
                .args(["--listen", "0.0.0.0:7443", "--boot-services", "flp-demo"])
                .arg("--ramdisk-dir")
                .arg(dir);
        }
        None => {
            coord_cmd.args(["--listen", quic]);
        }
    }
    let coord = Kill(
        coord_cmd
            .stdout(coord_log.try_clone()?)
            .stderr(coord_log)
            .spawn()
            .context("cannot start the coordinator")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    // Asked quietly until it answers: its admin.conf appears only once it has started.
    let answers = || {
        Command::new(&ferric_bin)
            .env("FERRIC_API", &api)
            .env("FERRIC_CONFIG", demo_conf())
            .args(["node", "list"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    while !answers() {
        if Instant::now() > deadline {
            bail!(
                "the coordinator did not come up; see {}",
                base.join("coordinator.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("coordinator: agents on udp://{quic}, API on {api}");

    let enroll = |name: &str, role: &str| -> Result<PathBuf> {
        step(&format!(
            "enroll {name} ({role}) with a single-use bootstrap token"
        ));
        let tok = ferric(
            &ferric_bin,
            &api,
            &["token", "create", "--ttl", "5m", "--output", "json"],
        )?;
        let v: serde_json::Value = serde_json::from_str(&tok).context("token create output")?;
        let (token, ca_hash) = (
            v["token"].as_str().unwrap_or_default(),
            v["ca_hash"].as_str().unwrap_or_default(),
        );
        let state = base.join(name);
        let enrolled = output(
            Command::new(&agent_bin)
                .arg("--state-dir")
                .arg(&state)
                .args([
                    "enroll",
                    "--coordinator",
                    quic,
                    "--token",
                    token,
                    "--ca-hash",
                    ca_hash,
                    "--node",
                    name,
                    "--role",
                    role,
                ]),
        )?;
        print!("{enrolled}");
        Ok(state)
    };
    let spawn = |name: &str, state: &Path, args: &[&str]| -> Result<Kill> {
        let log = std::fs::File::create(base.join(format!("{name}.log")))?;
        Ok(Kill(
            Command::new(&agent_bin)
                .arg("--state-dir")
                .arg(state)
                .arg("run")
                .args(args)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start an agent")?,
        ))
    };
    let mut agents = Vec::new();
    for name in ["rack1-host1", "rack1-host2", "rack1-host3"] {
        let state = enroll(name, "management")?;
        agents.push(spawn(
            name,
            &state,
            &["--driver", "fake", "--fake-step-delay", "300ms"],
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = ferric(&ferric_bin, &api, &["node", "list"])?;
        if list.matches("connected").count() == 3 {
            step("nodes (mutual TLS links up)");
            print!("{list}");
            break;
        }
        if Instant::now() > deadline {
            bail!("agents did not connect; see the logs in {}", base.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    step("apply a plan to all three nodes");
    let plan = base.join("plan.yaml");
    std::fs::write(
        &plan,
        "# A management host's job: network-boot a bare-metal node through its BMC\n\
         # (fake driver: the calls are recorded, nothing is sent).\n\
         steps:\n  - bmc_boot_device: { bmc: node-17, device: pxe }\n  - bmc_power: { bmc: node-17, action: cycle }\n    timeout: 60s\n  - bmc_boot_device: { bmc: node-17, device: disk, persistent: true }\n",
    )?;
    println!("{}", std::fs::read_to_string(&plan)?);
    let applied = ferric(
        &ferric_bin,
        &api,
        &[
            "plan",
            "apply",
            "-f",
            plan.to_str().unwrap_or_default(),
            "--node",
            "rack1-host1",
            "--node",
            "rack1-host2",
            "--node",
            "rack1-host3",
        ],
    )?;
    print!("{applied}");
    let ids: Vec<String> = applied
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    for id in &ids {
        step(&format!("events of plan {id}"));
        print!(
            "{}",
            ferric(&ferric_bin, &api, &["plan", "status", id, "--wait", "30s"])?
        );
    }

    step("live telemetry from rack1-host1 (one sample a second over QUIC datagrams)");
    let mut watch = Command::new(&ferric_bin);
    watch
        .env("FERRIC_API", &api)
        .env("FERRIC_CONFIG", demo_conf())
        .args(["telemetry", "watch", "rack1-host1", "--count", "3"]);
    run(&mut watch)?;

    // A part that fails is reported at once, the rest still runs and cleans up, and the demo
    // then exits non-zero naming it.
    let mut failed = Vec::new();
    let guest_part = demo_guest(&ferric_bin, &api, &base, &enroll, &spawn);
    match guest_part {
        Ok(Some(hv)) => agents.push(hv),
        Ok(None) => {}
        Err(e) => {
            println!("\nthe guest part of the demo failed: {e:#}");
            failed.push(format!("the guest part: {e:#}"));
        }
    }
    match demo_lab(
        &ferric_bin,
        &api,
        &lab_root,
        ramdisk.is_some(),
        &enroll,
        &spawn,
    ) {
        Ok(Some(mgmt)) => agents.push(mgmt),
        Ok(None) => {}
        Err(e) => {
            println!("\nthe lab part of the demo failed: {e:#}");
            failed.push(format!("the lab part: {e:#}"));
        }
    }

    step(&format!("the dashboard at {api}/"));
    match dashboard_answers(&api, &base.join("coordinator/ca.pem")) {
        Ok(()) => println!(
            "served from the coordinator binary; sign in with the token in {}",
            demo_conf().display()
        ),
        Err(e) => {
            println!("the dashboard did not answer: {e:#}");
            failed.push(format!("the dashboard: {e:#}"));
        }
    }

    if keep {
        println!(
            "\nrunning; API and dashboard at {api} (sign in with the token in {conf}; try: FERRIC_CONFIG={conf} {} node list). Ctrl-C stops.",
            ferric_bin.display(),
            conf = demo_conf().display(),
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if lab_root.join("demo/rack.json").exists() {
        step("remove the lab rack (processes, namespace, bridge, taps, files)");
        let _ = run(Command::new(&ferric_bin)
            .env("FERRIC_LAB_ROOT", &lab_root)
            .args(["lab", "--name", "demo", "down"]));
    }
    step("drain: agents and coordinator stop on SIGTERM");
    for a in agents.iter_mut() {
        terminate(a);
    }
    let mut coord = coord;
    terminate(&mut coord);
    if !failed.is_empty() {
        bail!(
            "the demo failed ({}); logs and state are in {}",
            failed.join("; "),
            base.display()
        );
    }
    println!("\ndemo finished; logs and state are in {}", base.display());
    Ok(())
}
