//! Emulated BMCs for the tests: OpenIPMI's `ipmi_sim` serving IPMI 2.0 over LAN on loopback,
//! with `ferric-chassis-sim` as its chassis, and `ipmitool` to read the same BMC back.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// User and password of the emulated BMCs' administrator.
pub const ADMIN: (&str, &str) = ("admin", "ferric-bmc-secret");

/// A running `ipmi_sim`.
#[derive(Debug)]
pub struct SimBmc {
    child: Option<Child>,
    /// UDP port of its LAN interface on 127.0.0.1.
    pub port: u16,
    /// The chassis state file (`power:1`, `boot:pxe`).
    pub state: PathBuf,
    dir: PathBuf,
}

fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl SimBmc {
    /// Starts a BMC whose files live in `dir`.
    pub fn start(dir: &Path) -> Result<SimBmc> {
        let port = free_udp_port()?;
        Self::start_on(dir, port)
    }

    /// Starts a BMC on `port` (to bring one back on the same address).
    pub fn start_on(dir: &Path, port: u16) -> Result<SimBmc> {
        std::fs::create_dir_all(dir)?;
        let chassis = crate::bin("ferric-chassis-sim")?;
        let state = dir.join("chassis");
        let (user, password) = ADMIN;
        let lan = format!(
            r#"name "ferric-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{} --state {}"
  user 2 true "{user}" "{password}" admin 32 none md2 md5 straight
  user 3 true "viewer" "viewer-secret" user 10 none md2 md5 straight
"#,
            chassis.display(),
            state.display()
        );
        // The administrator may hold 32 sessions: a login cut short by a lossy path leaves a
        // half-open session on the BMC until it times out, and the 30%-loss test makes
        // several (see docs/design.md, "BMC").
        std::fs::write(dir.join("lan.conf"), lan)?;
        std::fs::write(
            dir.join("sim.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )?;
        let log = std::fs::File::create(dir.join("ipmi_sim.log"))?;
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("sim.emu"))
            .arg("-n")
            .arg("-s")
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start ipmi_sim (Debian package openipmi)")?;
        let bmc = SimBmc {
            child: Some(child),
            port,
            state,
            dir: dir.to_owned(),
        };
        // Ready when ipmitool gets an answer.
        let started = Instant::now();
        while bmc.ipmitool(&["mc", "info"]).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "ipmi_sim did not answer on port {port}: {}",
                    std::fs::read_to_string(dir.join("ipmi_sim.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(bmc)
    }

    /// Runs `ipmitool -I lanplus` against this BMC as the administrator.
    pub fn ipmitool(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-C",
                "3",
                "-N",
                "1",
                "-R",
                "2",
                "-H",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", ADMIN.0, "-P", ADMIN.1])
            .args(args)
            .output()
            .context("cannot run ipmitool (Debian package ipmitool)")?;
        if !out.status.success() {
            bail!(
                "ipmitool {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The chassis state file's `key`.
    pub fn chassis(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(&self.state)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")).map(str::to_owned))
    }

    /// Stops the BMC (it stops answering).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP relay on loopback that drops a share of the datagrams in each direction, standing in
/// for a lossy management network.
#[derive(Debug)]
pub struct LossyRelay {
    /// Port clients send to.
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LossyRelay {
    /// Relays to `127.0.0.1:target`, dropping `loss_pct` percent of datagrams each way.
    pub fn start(target: u16, loss_pct: u32) -> Result<LossyRelay> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let front = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = front.local_addr()?.port();
        // Short, so that answers waiting on the back sockets are not held up.
        front.set_read_timeout(Some(Duration::from_millis(2)))?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            // One back socket per client address, so answers find their way home.
            let mut backs: Vec<(std::net::SocketAddr, std::net::UdpSocket)> = Vec::new();
            let mut buf = [0u8; 2048];
            let mut seed = 0x853c_49e6_748f_ea9b_u64 ^ u64::from(port);
            let mut drop_it = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 100) < u64::from(loss_pct)
            };
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    if !backs.iter().any(|(a, _)| *a == from) {
                        let Ok(b) = std::net::UdpSocket::bind("127.0.0.1:0") else {
                            continue;
                        };
                        let _ = b.set_nonblocking(true);
                        let _ = b.connect(("127.0.0.1", target));
                        backs.push((from, b));
                    }
                    if !drop_it()
                        && let Some((_, b)) = backs.iter().find(|(a, _)| *a == from)
                    {
                        let _ = b.send(&buf[..n]);
                    }
                }
                for (client, b) in &backs {
                    while let Ok(n) = b.recv(&mut buf) {
                        if !drop_it() {
                            let _ = front.send_to(&buf[..n], client);
                        }
                    }
                }
            }
        });
        Ok(LossyRelay { port, stop })
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
