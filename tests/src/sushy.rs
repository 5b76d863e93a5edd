//! A Redfish BMC no one on the project wrote: sushy-tools' emulator (PyPI `sushy-tools`, the
//! Redfish BMC Ironic's own CI uses) with its libvirt driver, in front of a libvirt domain of
//! the test's own. It serves HTTPS (TLS 1.2, a certificate the test made, which Ferric pins)
//! with HTTP basic authentication (a bcrypt htpasswd file); it has no session service, so
//! Ferric's client falls back to basic authentication as it would with such a BMC. Virtual
//! media goes into a transient storage pool of the test's own; the domain's firmware log
//! (SeaBIOS's debug port) says what it booted.
//!
//! The test command installs sushy-tools into `target/sushy-venv` from the pinned, hashed
//! `tests/python/sushy-requirements.txt`.

use crate::Proc;
use crate::hv::{ensure_libvirtd, target_dir, virsh};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The account the emulator is given.
pub const ADMIN: (&str, &str) = ("admin", "ferric-sushy-secret");

/// A libvirt domain behind a running sushy-emulator; both (and the pool) removed when dropped.
#[derive(Debug)]
pub struct Sushy {
    /// The libvirt domain's name.
    pub domain: String,
    /// Its UUID (sushy's system id).
    pub uuid: String,
    /// HTTPS port on 127.0.0.1.
    pub port: u16,
    /// SHA-256 of the emulator's certificate.
    pub fingerprint: [u8; 32],
    /// The domain's firmware log (SeaBIOS's debug console).
    pub firmware_log: PathBuf,
    pool: String,
    daemon: Proc,
}

fn venv() -> Result<PathBuf> {
    let v = target_dir()?.join("sushy-venv");
    if !v.join("bin/sushy-emulator").exists() {
        bail!(
            "sushy-tools is not installed at {} — `cargo xtask test` installs it (pip, from \
             tests/python/sushy-requirements.txt)",
            v.display()
        );
    }
    Ok(v)
}

impl Sushy {
    /// Defines a domain named `domain` (powered off, a PC with SeaBIOS and a NIC) and starts
    /// an emulator for it alone; files go to `dir`.
    pub fn start(dir: &Path, domain: &str) -> Result<Sushy> {
        ensure_libvirtd()?;
        let venv = venv()?;
        std::fs::create_dir_all(dir.join("state"))?;
        std::fs::create_dir_all(dir.join("pool"))?;
        let _ = virsh(&["destroy", domain]);
        let _ = virsh(&["undefine", domain]);
        let pool = format!("{domain}-pool");
        let _ = virsh(&["pool-destroy", &pool]);
        virsh(&[
            "pool-create-as",
            &pool,
            "dir",
            "--target",
            &dir.join("pool").to_string_lossy(),
        ])?;
        let firmware_log = dir.join("firmware.log");
        // An empty disk: something for a disk boot override to name (sushy moves the
        // definition's boot order onto a device, so the device must exist).
        let disk = dir.join("disk.img");
        std::fs::File::create(&disk)?.set_len(1 << 20)?;
        let xml = dir.join("domain.xml");
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n  \
                 <name>{domain}</name>\n  <memory unit='MiB'>128</memory>\n  <vcpu>1</vcpu>\n  \
                 <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n  \
                 <features><acpi/></features>\n  <devices>\n    \
                 <disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                 <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\n    \
                 <interface type='user'><model type='e1000'/></interface>\n    \
                 <memballoon model='none'/>\n  </devices>\n  <qemu:commandline>\n    \
                 <qemu:arg value='-chardev'/><qemu:arg value='file,id=fw,path={log}'/>\n    \
                 <qemu:arg value='-device'/><qemu:arg value='isa-debugcon,iobase=0x402,chardev=fw'/>\n  \
                 </qemu:commandline>\n</domain>\n",
                log = firmware_log.display(),
                disk = disk.display(),
            ),
        )?;
        virsh(&["define", &xml.to_string_lossy()])?;
        let uuid = virsh(&["domuuid", domain])?.trim().to_owned();

        // The certificate, and the account as a bcrypt htpasswd line (what sushy reads).
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
        let fingerprint = ferric_redfish::trust::fingerprint(cert.der());
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        let hash = ferric_lab::run(Command::new(venv.join("bin/python")).args([
            "-c",
            &format!(
                "import bcrypt; print(bcrypt.hashpw(b'{}', bcrypt.gensalt()).decode())",
                ADMIN.1
            ),
        ]))?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{}:{}\n", ADMIN.0, hash.trim()))?;

        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join("sushy.conf");
        std::fs::write(
            &config,
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
                 SUSHY_EMULATOR_SSL_CERT = '{cert}'\n\
                 SUSHY_EMULATOR_SSL_KEY = '{key}'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
                 SUSHY_EMULATOR_LIBVIRT_URI = 'qemu:///system'\n\
                 SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
                 SUSHY_EMULATOR_STORAGE_POOL = '{pool}'\n\
                 SUSHY_EMULATOR_ALLOWED_INSTANCES = ['{uuid}']\n",
                cert = cert_file.display(),
                key = key_file.display(),
                auth = htpasswd.display(),
                state = dir.join("state").display(),
            ),
        )?;
        let mut cmd = Command::new(venv.join("bin/sushy-emulator"));
        cmd.arg("--config").arg(&config);
        let daemon = Proc::spawn_command(cmd, &dir.join("sushy.log"))?;
        let mut this = Sushy {
            domain: domain.to_owned(),
            uuid,
            port,
            fingerprint,
            firmware_log,
            pool,
            daemon,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if !this.daemon.running() || started.elapsed() > Duration::from_secs(30) {
                bail!("sushy-emulator did not start: {}", this.daemon.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(this)
    }

    /// The BMC's address as Ferric enrolls it, its certificate pinned.
    pub fn address(&self) -> String {
        format!(
            "redfish://{}@127.0.0.1:{}?pin={}",
            ADMIN.0,
            self.port,
            ferric_proto::msg::fingerprint_text(&self.fingerprint)
        )
    }

    /// The emulator's log so far.
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// Whether libvirt says the domain runs.
    pub fn running(&self) -> Result<bool> {
        Ok(virsh(&["domstate", &self.domain])?.trim() == "running")
    }

    /// The domain's inactive definition.
    pub fn xml(&self) -> Result<String> {
        virsh(&["dumpxml", "--inactive", &self.domain]).context("virsh dumpxml")
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = virsh(&["destroy", &self.domain]);
        let _ = virsh(&["undefine", &self.domain]);
        let _ = virsh(&["pool-destroy", &self.pool]);
    }
}
