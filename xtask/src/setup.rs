//! What a fresh machine needs before Ferric builds and its tests run: Debian packages (the
//! libvirt headers to link against, libvirtd and QEMU for the hypervisor tier, busybox for the
//! test guests' initramfs, qemu-img for the image tests, curl for the image benchmark, OpenIPMI's
//! ipmi_sim and ipmitool for the BMC tests, iPXE ROMs, iproute2 and binutils for the lab, lvm2
//! for LVM pools — the agent's and the hypervisor-host VM's, which runs this machine's programs,
//! Chromium and chromedriver for the dashboard's browser test),
//! and VirtualBMC (Python, from PyPI, pinned with hashes) for the BMC interoperability tests.
//! Idempotent: installed packages are left alone.

use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};

/// Packages from the release's own suite.
const PACKAGES: &[&str] = &[
    "pkg-config",
    "libvirt-dev",
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "busybox-static",
    "curl",
    // A further reference in the image benchmark (sparse raw writes with a block map).
    "bmap-tools",
    "openipmi",
    "ipmitool",
    "ipxe-qemu",
    // iPXE for network boot over TFTP (undionly.kpxe, ipxe.efi), and dnsmasq for the
    // proxy-DHCP test (an address-only DHCP server beside Ferric's).
    "ipxe",
    // The ramdisk's CA bundle, for images fetched from https:// URLs.
    "ca-certificates",
    "dnsmasq-base",
    // UEFI firmware for the lab's nodes (OVMF_CODE_4M.fd, the OVMF_VARS_4M.fd template).
    "ovmf",
    "iproute2",
    "binutils",
    "lvm2",
    // The deploy tests' OS image: a disk that boots with SYSLINUX from a FAT partition.
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
    // The deploy ramdisk as a BIOS and UEFI bootable ISO for virtual media (grub-mkrescue).
    "grub-common",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "xorriso",
    // The deploy tests' cloud image: Debian 12 from the archive (mmdebstrap), reached with
    // the deploy's SSH key.
    "mmdebstrap",
    "openssh-client",
    // The dashboard's browser test: headless Chromium and its WebDriver server.
    "chromium",
    "chromium-driver",
    // VirtualBMC's Python runtime: its venv takes these from the system.
    "python3-venv",
    "python3-libvirt",
    "python3-cryptography",
    "python3-yaml",
    "python3-pygments",
    "python3-six",
];

/// Packages taken from backports: the machine's qemu-utils comes from there, and the release's
/// qemu-system-x86 refuses to install beside it.
const BACKPORTS: &[&str] = &["qemu-system-x86", "qemu-utils"];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn os_codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .context("/etc/os-release names no VERSION_CODENAME")
}

/// The Debian mirror the machine already uses (backports come from the same place).
fn mirror() -> String {
    let from_sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| l.strip_prefix("URIs:"))
                .map(str::trim)
                .find(|u| u.ends_with("/debian") || u.ends_with("/debian/"))
                .map(str::to_owned)
        });
    from_sources.unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Installs whatever is missing.
pub fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    let missing_bp: Vec<&str> = BACKPORTS
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() && missing_bp.is_empty() {
        return Ok(());
    }
    let all: Vec<&str> = missing.iter().chain(&missing_bp).copied().collect();
    println!("installing Debian packages: {}", all.join(" "));
    if !nix_is_root() {
        bail!(
            "these Debian packages are missing and installing them needs root: {}",
            all.join(" ")
        );
    }
    if !missing_bp.is_empty() {
        let codename = os_codename()?;
        let list = "/etc/apt/sources.list.d/ferric-backports.sources";
        if !std::path::Path::new(list).exists() {
            std::fs::write(
                list,
                format!(
                    "Types: deb\nURIs: {}\nSuites: {codename}-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
                    mirror()
                ),
            )
            .with_context(|| format!("cannot write {list}"))?;
        }
    }
    apt(&["update", "-qq"])?;
    if !missing_bp.is_empty() {
        let suite = format!("{}-backports", os_codename()?);
        let mut args = vec!["install", "-y", "-qq", "-t", suite.as_str()];
        args.extend(&missing_bp);
        apt(&args)?;
    }
    if !missing.is_empty() {
        let mut args = vec!["install", "-y", "-qq"];
        args.extend(&missing);
        apt(&args)?;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// VirtualBMC in a virtual environment at `venv` (its `bin/vbmcd` and `bin/vbmc`), from the
/// pinned, hashed `requirements`; Debian's Python and its libvirt binding under it. Skipped
/// when the environment was made from the same requirements.
pub fn virtualbmc(venv: &std::path::Path, requirements: &std::path::Path) -> Result<()> {
    python_tools(
        "VirtualBMC",
        venv,
        requirements,
        true,
        "import virtualbmc.vbmc, pyghmi.ipmi.bmc, libvirt, zmq",
    )
}

/// sushy-tools' Redfish emulator (`bin/sushy-emulator`, its libvirt driver on Debian's
/// libvirt binding) in a virtual environment at `venv`, from the pinned, hashed
/// `requirements`.
pub fn sushy_tools(venv: &std::path::Path, requirements: &std::path::Path) -> Result<()> {
    python_tools(
        "sushy-tools",
        venv,
        requirements,
        true,
        "import sushy_tools.emulator.main, libvirt, bcrypt",
    )
}

/// DMTF's Redfish Service Validator (`bin/rf_service_validator`) in a plain virtual
/// environment at `venv`, from the pinned, hashed `requirements`.
pub fn redfish_validator(venv: &std::path::Path, requirements: &std::path::Path) -> Result<()> {
    python_tools(
        "DMTF's Redfish Service Validator",
        venv,
        requirements,
        false,
        "import redfish_service_validator",
    )
}

/// The API contract tests' tools (schemathesis, prometheus_client's parser) in a plain
/// virtual environment at `venv`, from the pinned, hashed `requirements`.
pub fn api_tools(venv: &std::path::Path, requirements: &std::path::Path) -> Result<()> {
    python_tools(
        "the API test tools",
        venv,
        requirements,
        false,
        "import schemathesis, prometheus_client.parser",
    )
}

/// A virtual environment of Debian's python3 at `venv` with exactly the pinned, hashed
/// `requirements` (with the system's site packages under it if `system_site`), checked by
/// running `probe`. Skipped when it was made from the same requirements.
fn python_tools(
    what: &str,
    venv: &std::path::Path,
    requirements: &std::path::Path,
    system_site: bool,
    probe: &str,
) -> Result<()> {
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let stamp = venv.join("ferric-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    println!("installing {what} into {}", venv.display());
    let _ = std::fs::remove_dir_all(venv);
    let mut venv_cmd = Command::new("/usr/bin/python3");
    venv_cmd.args(["-m", "venv"]);
    if system_site {
        venv_cmd.arg("--system-site-packages");
    }
    let status = venv_cmd
        .arg(venv)
        .status()
        .context("cannot run /usr/bin/python3 (Debian's python3-venv)")?;
    if !status.success() {
        bail!("python3 -m venv {} failed with {status}", venv.display());
    }
    let status = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--require-hashes",
            "-r",
        ])
        .arg(requirements)
        .status()
        .with_context(|| format!("cannot run pip in the environment of {what}"))?;
    if !status.success() {
        bail!(
            "pip install -r {} failed with {status}",
            requirements.display()
        );
    }
    let status = Command::new(venv.join("bin/python"))
        .args(["-c", probe])
        .status()
        .with_context(|| format!("cannot run the python of {what}"))?;
    if !status.success() {
        bail!("{what} were installed but do not import (see above)");
    }
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(())
}
