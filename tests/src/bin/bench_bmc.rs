//! BMC benchmark: a power-status sweep over N emulated BMCs (`ipmi_sim` on loopback, one
//! process each). Ferric's IPMI client asks all of them at once over sessions it keeps; the
//! reference is what other provisioning systems do — one `ipmitool -I lanplus` process per
//! call (a new process, a new RMCP+ login, one command, logout) — run one after another and,
//! for fairness, eight at a time — and ipmitool at its fastest: one `ipmitool … shell` per
//! BMC kept open (one RMCP+ session each, commands piped in), all asked at once like Ferric's
//! sweep, with its first sweep (process start and login) set against Ferric's. Every answer
//! is checked (each BMC reports its power off).

use anyhow::{Context, Result, bail};
use clap::Parser;
use ferric_agent::bmc::ipmi::{IpmiClient, IpmiOptions};
use ferric_agent::bmc::{BmcTarget, Secret};
use ferric_tests::bmc::{ADMIN, SimBmc};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Emulated BMCs.
    #[arg(long, default_value_t = 50)]
    bmcs: usize,
    /// Sweeps per method (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ipmitool_status(port: u16) -> Result<bool> {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", ADMIN.0, "-P", ADMIN.1, "chassis", "power", "status"])
        .output()
        .context("cannot run ipmitool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ipmitool on port {port}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text.contains("is on"))
}

/// One sweep with `parallel` ipmitool processes at a time; returns its time.
fn ipmitool_sweep(ports: &[u16], parallel: usize) -> Result<Duration> {
    let started = Instant::now();
    for chunk in ports.chunks(parallel) {
        let answers: Vec<Result<bool>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&p| s.spawn(move || ipmitool_status(p)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("ipmitool thread panicked"))
                })
                .collect()
        });
        for a in answers {
            if a? {
                bail!("a BMC reported power on; all are off");
            }
        }
    }
    Ok(started.elapsed())
}

/// One `ipmitool -I lanplus … shell` kept open on a BMC: one session, commands piped in.
struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
    port: u16,
}

impl Shell {
    /// Starts the shell (it logs in at once). ipmitool's stdout is a pipe, so `stdbuf -oL`
    /// makes it answer line by line instead of when its buffer fills.
    fn start(port: u16) -> Result<Self> {
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "ipmitool",
                "-I",
                "lanplus",
                "-C",
                "3",
                "-H",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .args(["-U", ADMIN.0, "-P", ADMIN.1, "shell"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot run stdbuf ipmitool shell")?;
        let stdin = child.stdin.take().context("the shell's stdin")?;
        let out = std::io::BufReader::new(child.stdout.take().context("the shell's stdout")?);
        Ok(Self {
            child,
            stdin,
            out,
            port,
        })
    }

    fn ask(&mut self) -> Result<()> {
        use std::io::Write;
        self.stdin.write_all(b"chassis power status\n")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Reads the answer to one `ask`: true when the power is on.
    fn answer(&mut self) -> Result<bool> {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                bail!("ipmitool shell on port {} ended", self.port);
            }
            if line.contains("Chassis Power is") {
                return Ok(line.contains("is on"));
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        use std::io::Write;
        // `exit` logs out of the session; the process is reaped either way.
        let _ = self.stdin.write_all(b"exit\n");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sweep over kept shells: every shell asked at once, then every answer read.
fn shell_sweep(shells: &mut [Shell]) -> Result<Duration> {
    let started = Instant::now();
    for sh in shells.iter_mut() {
        sh.ask()?;
    }
    for sh in shells.iter_mut() {
        if sh.answer()? {
            bail!("a BMC reported power on; all are off");
        }
    }
    Ok(started.elapsed())
}

async fn ferric_sweep(c: &IpmiClient, targets: &[BmcTarget]) -> Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in targets {
        let (c, t) = (c.clone(), t.clone());
        tasks.spawn(async move { c.chassis_status(&t).await });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        let st = r??;
        if st.power_on {
            bail!("a BMC reported power on; all are off");
        }
        n += 1;
    }
    if n != targets.len() {
        bail!("{n} answers for {} BMCs", targets.len());
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    println!("starting {} emulated BMCs (ipmi_sim)…", args.bmcs);
    let sims: Vec<SimBmc> = (0..args.bmcs)
        .map(|i| SimBmc::start(&dir.path().join(format!("bmc{i}"))))
        .collect::<Result<_>>()?;
    let ports: Vec<u16> = sims.iter().map(|s| s.port).collect();
    let targets: Vec<BmcTarget> = ports
        .iter()
        .map(|p| {
            BmcTarget::parse(
                &format!("ipmi://{}@127.0.0.1:{p}", ADMIN.0),
                Secret::new(ADMIN.1),
            )
            .map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()?;

    // Like for like with `ipmitool -C 3`: the suite named in the address, no probe for 17.
    let named: Vec<BmcTarget> = ports
        .iter()
        .map(|p| {
            BmcTarget::parse(
                &format!("ipmi://{}@127.0.0.1:{p}?suite=3", ADMIN.0),
                Secret::new(ADMIN.1),
            )
            .map_err(anyhow::Error::msg)
        })
        .collect::<Result<_>>()?;
    let named_client = IpmiClient::new(IpmiOptions::default());
    let cold_named = ferric_sweep(&named_client, &named).await?;
    named_client.close_all().await;
    let client = IpmiClient::new(IpmiOptions::default());
    let cold = ferric_sweep(&client, &targets).await?;
    let mut warm = Vec::new();
    for _ in 0..args.rounds {
        warm.push(ferric_sweep(&client, &targets).await?);
    }
    let warm = median(warm);
    let mut seq = Vec::new();
    let mut par = Vec::new();
    for _ in 0..args.rounds {
        let p = ports.clone();
        seq.push(tokio::task::spawn_blocking(move || ipmitool_sweep(&p, 1)).await??);
        let p = ports.clone();
        par.push(tokio::task::spawn_blocking(move || ipmitool_sweep(&p, 8)).await??);
    }
    let (seq, par) = (median(seq), median(par));
    // ipmitool shells: the first sweep starts them (a process and a login each, all at once)
    // and asks once; then the kept sessions are swept.
    let (p, rounds) = (ports.clone(), args.rounds);
    let (shell_cold, shell_warm) = tokio::task::spawn_blocking(move || -> Result<_> {
        let started = Instant::now();
        let mut shells: Vec<Shell> = p
            .iter()
            .map(|&port| Shell::start(port))
            .collect::<Result<_>>()?;
        for sh in shells.iter_mut() {
            sh.ask()?;
        }
        for sh in shells.iter_mut() {
            if sh.answer()? {
                bail!("a BMC reported power on; all are off");
            }
        }
        let cold = started.elapsed();
        let mut warm = Vec::new();
        for _ in 0..rounds {
            warm.push(shell_sweep(&mut shells)?);
        }
        Ok((cold, median(warm)))
    })
    .await??;
    client.close_all().await;

    let n = args.bmcs as f64;
    let row = |name: &str, d: Duration| {
        println!(
            "| {name:<52} | {:>9.3} | {:>9.2} | {:>8.1}× |",
            d.as_secs_f64(),
            d.as_secs_f64() * 1000.0 / n,
            d.as_secs_f64() / warm.as_secs_f64()
        );
    };
    println!();
    println!(
        "power-status sweep over {} BMCs, median of {} sweeps; ratio = time / Ferric's warm sweep",
        args.bmcs, args.rounds
    );
    println!(
        "| {:<52} | {:>9} | {:>9} | {:>9} |",
        "method", "sweep s", "ms/BMC", "ratio"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11)
    );
    row("Ferric, sessions kept, all BMCs at once", warm);
    row(
        "ipmitool shell per BMC, sessions kept, all at once",
        shell_warm,
    );
    row("Ferric, first sweep, suite named (?suite=3)", cold_named);
    row("Ferric, first sweep, suite 17 asked first", cold);
    row(
        "ipmitool shell per BMC, first sweep (start, login)",
        shell_cold,
    );
    row("ipmitool, one process per call, one after another", seq);
    row("ipmitool, one process per call, 8 at a time", par);
    println!();
    println!(
        "Ferric is {:.1}× faster than one ipmitool per call (sequential), {:.1}× than 8 in parallel, {:.1}× than kept ipmitool shells (the fastest reference); first sweeps: {:.1}×",
        seq.as_secs_f64() / warm.as_secs_f64(),
        par.as_secs_f64() / warm.as_secs_f64(),
        shell_warm.as_secs_f64() / warm.as_secs_f64(),
        shell_cold.as_secs_f64() / cold_named.as_secs_f64()
    );
    drop(sims);
    Ok(())
}
