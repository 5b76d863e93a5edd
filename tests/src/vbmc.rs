//! A BMC that no one on the project wrote: OpenStack's VirtualBMC (PyPI `virtualbmc`, the BMC
//! Ironic's own CI uses, on pyghmi) in front of a libvirt domain. `vbmcd` runs in the
//! foreground with a configuration of the test's own (its state directory, its control port);
//! `vbmc add` and `vbmc start` give the domain a BMC on a loopback UDP port. The domain is a
//! small QEMU machine without disks: powered on, it runs (SeaBIOS finds nothing to boot and
//! waits), which is all a BMC test needs.
//!
//! The test command installs VirtualBMC into `target/vbmc-venv` from the pinned, hashed
//! `tests/python/vbmc-requirements.txt`.

use crate::hv::{URI, ensure_libvirtd, target_dir, virsh};
use crate::{Proc, free_port};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The administrator VirtualBMC is given.
pub const ADMIN: (&str, &str) = ("admin", "ferric-vbmc-secret");

/// A libvirt domain with a running VirtualBMC; both removed when dropped.
#[derive(Debug)]
pub struct VirtualBmc {
    /// The libvirt domain's name.
    pub domain: String,
    /// UDP port of its IPMI-over-LAN interface on 127.0.0.1.
    pub port: u16,
    venv: PathBuf,
    config: PathBuf,
    daemon: Proc,
}

fn venv() -> Result<PathBuf> {
    let v = target_dir()?.join("vbmc-venv");
    if !v.join("bin/vbmcd").exists() {
        bail!(
            "VirtualBMC is not installed at {} — `cargo xtask test` installs it (pip, from \
             tests/python/vbmc-requirements.txt)",
            v.display()
        );
    }
    Ok(v)
}

impl VirtualBmc {
    /// Defines a domain named `domain` (powered off) and starts a VirtualBMC for it; files go
    /// to `dir`.
    pub fn start(dir: &Path, domain: &str) -> Result<VirtualBmc> {
        ensure_libvirtd()?;
        let venv = venv()?;
        std::fs::create_dir_all(dir.join("state"))?;
        let _ = virsh(&["destroy", domain]);
        let _ = virsh(&["undefine", domain]);
        let xml = dir.join("domain.xml");
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu'>\n  <name>{domain}</name>\n  <memory unit='MiB'>64</memory>\n  \
                 <vcpu>1</vcpu>\n  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n  \
                 <features><acpi/></features>\n  <devices><memballoon model='none'/></devices>\n</domain>\n"
            ),
        )?;
        virsh(&["define", &xml.to_string_lossy()])?;
        let config = dir.join("virtualbmc.conf");
        std::fs::write(
            &config,
            format!(
                "[default]\nconfig_dir = {state}\npid_file = {dir}/vbmcd.pid\nserver_port = {port}\n\
                 [log]\nlogfile = {dir}/vbmcd.log\ndebug = true\n",
                state = dir.join("state").display(),
                dir = dir.display(),
                port = free_tcp_port()?,
            ),
        )?;
        let mut cmd = Command::new(venv.join("bin/vbmcd"));
        cmd.arg("--foreground").env("VIRTUALBMC_CONFIG", &config);
        let daemon = Proc::spawn_command(cmd, &dir.join("vbmcd.out"))?;
        let port = free_port()?;
        let mut this = VirtualBmc {
            domain: domain.to_owned(),
            port,
            venv,
            config,
            daemon,
        };
        // vbmcd answers once its control socket is up.
        let started = Instant::now();
        while this.vbmc(&["list"]).is_err() {
            if !this.daemon.running() || started.elapsed() > Duration::from_secs(20) {
                bail!("vbmcd did not start: {}", this.daemon.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        this.vbmc(&[
            "add",
            domain,
            "--port",
            &port.to_string(),
            "--address",
            "127.0.0.1",
            "--username",
            ADMIN.0,
            "--password",
            ADMIN.1,
            "--libvirt-uri",
            URI,
        ])?;
        this.vbmc(&["start", domain])?;
        // The BMC serves once ipmitool gets an answer.
        let started = Instant::now();
        loop {
            match this.power_status() {
                Ok(_) => break,
                Err(e) if started.elapsed() > Duration::from_secs(20) => {
                    return Err(e.context(format!(
                        "VirtualBMC for `{domain}` never answered ipmitool (vbmcd log: {})",
                        std::fs::read_to_string(this.config.with_file_name("vbmcd.log"))
                            .unwrap_or_default()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        Ok(this)
    }

    /// Runs `vbmc ARGS` against this test's vbmcd.
    pub fn vbmc(&self, args: &[&str]) -> Result<String> {
        Ok(ferric_lab::run(
            Command::new(self.venv.join("bin/vbmc"))
                .args(args)
                .env("VIRTUALBMC_CONFIG", &self.config),
        )?)
    }

    /// The BMC's address as Ferric enrolls it: `ipmi://admin@127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("ipmi://{}@127.0.0.1:{}", ADMIN.0, self.port)
    }

    /// `ipmitool -I lanplus` against this BMC, as an operator would run it.
    pub fn ipmitool(&self, args: &[&str]) -> Result<String> {
        Ok(ferric_lab::run(
            Command::new("ipmitool")
                .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .args(["-U", ADMIN.0, "-P", ADMIN.1, "-N", "1", "-R", "3"])
                .args(args),
        )?)
    }

    /// What `ipmitool chassis power status` says of it (`Chassis Power is on`).
    pub fn power_status(&self) -> Result<String> {
        self.ipmitool(&["chassis", "power", "status"])
    }

    /// Whether libvirt says the domain runs.
    pub fn running(&self) -> Result<bool> {
        Ok(virsh(&["domstate", &self.domain])?.trim() == "running")
    }

    /// The boot device in the domain's definition (`network`, `hd`, …).
    pub fn boot_dev(&self) -> Result<Option<String>> {
        let xml = virsh(&["dumpxml", "--inactive", &self.domain])?;
        Ok(xml
            .split("<boot dev='")
            .nth(1)
            .and_then(|r| r.split('\'').next().map(str::to_owned)))
    }
}

impl Drop for VirtualBmc {
    fn drop(&mut self) {
        let _ = self.vbmc(&["stop", &self.domain]);
        let _ = self.vbmc(&["delete", &self.domain]);
        self.daemon.kill();
        let _ = virsh(&["destroy", &self.domain]);
        let _ = virsh(&["undefine", &self.domain]);
    }
}

fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A BMC that keeps the boot flags it is sent (`tests/python/bootflags_bmc.py`, on pyghmi's
/// RMCP+ server from the same virtual environment): neither ipmi_sim nor VirtualBMC store the
/// persistent and EFI bits of boot parameter 5, so reading them back needs one that does, as a
/// real BMC does. Its chassis state (power, the stored flags) is a JSON file beside it.
#[derive(Debug)]
pub struct BootFlagsBmc {
    /// UDP port of its IPMI-over-LAN interface on 127.0.0.1.
    pub port: u16,
    state: PathBuf,
    daemon: Proc,
}

impl BootFlagsBmc {
    /// Starts the BMC with [`ADMIN`]'s credentials; files go to `dir`.
    pub fn start(dir: &Path) -> Result<BootFlagsBmc> {
        let venv = venv()?;
        std::fs::create_dir_all(dir)?;
        let password = dir.join("password");
        std::fs::write(&password, ADMIN.1)?;
        let state = dir.join("chassis.json");
        let port = free_port()?;
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/bootflags_bmc.py"))
            .args(["--port", &port.to_string(), "--user", ADMIN.0])
            .arg("--password-file")
            .arg(&password)
            .arg("--state")
            .arg(&state);
        let daemon = Proc::spawn_command(cmd, &dir.join("bmc.out"))?;
        let mut this = BootFlagsBmc {
            port,
            state,
            daemon,
        };
        let started = Instant::now();
        while let Err(e) = this.ipmitool(&["chassis", "power", "status"]) {
            if !this.daemon.running() || started.elapsed() > Duration::from_secs(20) {
                return Err(e.context(format!(
                    "the boot-flags BMC never answered ipmitool: {}",
                    this.daemon.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(this)
    }

    /// The BMC's address as Ferric enrolls it: `ipmi://admin@127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("ipmi://{}@127.0.0.1:{}", ADMIN.0, self.port)
    }

    /// `ipmitool -I lanplus` against this BMC, as an operator would run it.
    pub fn ipmitool(&self, args: &[&str]) -> Result<String> {
        Ok(ferric_lab::run(
            Command::new("ipmitool")
                .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .args(["-U", ADMIN.0, "-P", ADMIN.1, "-N", "1", "-R", "3"])
                .args(args),
        )?)
    }

    /// The chassis state the BMC wrote last: `power`, `boot_flags` (the five data bytes of
    /// parameter 5 in hex), `sets`.
    pub fn chassis(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&std::fs::read(&self.state)?)?)
    }
}
