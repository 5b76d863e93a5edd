//! The builder of what the boot services hand to bare-metal nodes: Debian's kernel (the
//! generic flavour: real hardware needs its NIC, storage and IPMI drivers) and an initramfs
//! whose `/init` is `ferric-ramdisk` itself, with only the kernel modules named here and
//! their dependencies, and the shared libraries the binary needs. No shell, no busybox.

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel modules the ramdisk carries (by name; what the kernel lacks is skipped): virtual
/// machines' NICs and disks, common server NICs and storage controllers, in-band IPMI.
pub const MODULES: &[&str] = &[
    // Virtual machines (QEMU, KVM): virtio, and the e1000 family QEMU emulates.
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "e1000e",
    // Server NICs.
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "bnxt_en",
    "tg3",
    "r8169",
    "mlx5_core",
    // Storage.
    "nvme",
    "ahci",
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
    // In-band IPMI (/dev/ipmi0).
    "ipmi_msghandler",
    "ipmi_devintf",
    "ipmi_si",
    // UEFI variables (the deployed disk's boot entry), on a machine booted by UEFI.
    "efivarfs",
];

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command.
        cmd: String,
        /// What it said.
        stderr: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The kernel package is not what was expected.
    #[error("{0}")]
    Kernel(String),
    /// A file given as a CA holds no certificate.
    #[error("{path}: {problem}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs a command; its stdout.
pub fn run(cmd: &mut Command) -> Result<String, BuildError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| BuildError::Command {
        cmd: shown.clone(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BuildError::Command {
            cmd: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An unpacked Debian kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `boot/vmlinuz-*`.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>`.
    pub modules: PathBuf,
}

impl Kernel {
    /// The `kernel/` tree of its modules.
    pub fn tree(&self) -> PathBuf {
        self.modules.join("kernel")
    }
}

/// Downloads (into `dir`, once) the kernel package that Debian's meta-package `meta` names
/// (`linux-image-amd64`, `linux-image-cloud-amd64`) and unpacks it there.
pub fn debian_kernel(meta: &str, dir: &Path) -> Result<Kernel, BuildError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let depends = || run(Command::new("apt-cache").args(["depends", meta]));
    let deps = match depends() {
        Ok(d) if d.contains("Depends:") => d,
        _ => {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            depends()?
        }
    };
    let pkg = deps
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::to_owned)
        .ok_or_else(|| BuildError::Kernel(format!("{meta} names no kernel package")))?;
    let deb = || {
        std::fs::read_dir(dir).ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
            })
        })
    };
    if deb().is_none() {
        run(Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(dir))?;
    }
    let deb = deb().ok_or_else(|| BuildError::Kernel("apt-get download left no .deb".into()))?;
    let x = dir.join(format!("x-{pkg}"));
    if !x.exists() {
        let tmp = dir.join(format!("x-{pkg}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
        std::fs::rename(&tmp, &x).map_err(io(&x))?;
    }
    unpacked(&x)
}

/// A kernel package already unpacked at `root` (`boot/vmlinuz-*`, `lib/modules/<v>`).
pub fn unpacked(root: &Path) -> Result<Kernel, BuildError> {
    let lib = root.join("lib/modules");
    let version = std::fs::read_dir(&lib)
        .map_err(io(&lib))?
        .flatten()
        .next()
        .ok_or_else(|| BuildError::Kernel(format!("{} holds no module tree", lib.display())))?
        .file_name();
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(io(&boot))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .ok_or_else(|| BuildError::Kernel(format!("{} holds no vmlinuz", boot.display())))?;
    Ok(Kernel {
        vmlinuz,
        modules: lib.join(version),
    })
}

/// The kernel's `modules.dep`; made with `depmod` when the package has none (Debian's
/// packages leave it to the installation).
pub fn modules_dep(k: &Kernel) -> Result<String, BuildError> {
    let path = k.modules.join("modules.dep");
    if !path.exists() {
        let version = k
            .modules
            .file_name()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        // modules/<v> → the package root (…/lib/modules/<v>).
        let root = k.modules.ancestors().nth(3).ok_or_else(|| {
            BuildError::Kernel(format!("{} is no module directory", k.modules.display()))
        })?;
        run(Command::new("depmod").arg("-b").arg(root).arg(&version))?;
    }
    std::fs::read_to_string(&path).map_err(io(&path))
}

/// Normalizes a module name (`dm-mod` and `dm_mod` are one module).
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The stem of a module path (`drivers/md/dm-mod.ko` → `dm-mod`).
pub fn module_stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".ko").unwrap_or(file)
}

/// The modules named (and their dependencies, first), as paths relative to the module
/// directory, in load order; names the kernel does not have are returned apart.
pub fn resolve_modules(modules_dep: &str, names: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((m, d)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            norm(module_stem(m)),
            (
                m.to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            ),
        );
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    fn visit(
        name: &str,
        deps: &HashMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        let Some((path, ds)) = deps.get(name) else {
            return;
        };
        if !seen.insert(name.to_owned()) {
            return;
        }
        for d in ds {
            visit(&norm(module_stem(d)), deps, seen, order);
        }
        order.push(path.clone());
    }
    for n in names {
        let n = norm(n);
        if deps.contains_key(&n) {
            visit(&n, &deps, &mut seen, &mut order);
        } else {
            missing.push(n);
        }
    }
    (order, missing)
}

/// One archive entry: name, mode, content, device numbers.
type Entry = (String, u32, Vec<u8>, Option<(u32, u32)>);

/// An initramfs being assembled (newc cpio).
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
    dirs: BTreeSet<String>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, name: &str) {
        let mut missing = Vec::new();
        let mut p = Some(Path::new(name));
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            let s = d.to_string_lossy().into_owned();
            if !self.dirs.insert(s.clone()) {
                break;
            }
            missing.push(s);
            p = d.parent();
        }
        for d in missing.into_iter().rev() {
            self.entries.push((d, 0o040755, Vec::new(), None));
        }
    }

    /// A regular file with permission bits `perm` (its parent directories are added).
    pub fn file(&mut self, name: &str, perm: u32, bytes: Vec<u8>) {
        if let Some(parent) = Path::new(name).parent() {
            self.dir(&parent.to_string_lossy());
        }
        self.entries
            .push((name.to_owned(), 0o100000 | perm, bytes, None));
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        if let Some(parent) = Path::new(name).parent() {
            self.dir(&parent.to_string_lossy());
        }
        self.entries.push((
            name.to_owned(),
            0o020000 | perm,
            Vec::new(),
            Some((major, minor)),
        ));
    }

    /// Each of `modules` (paths under the kernel's module tree `tree`) as
    /// `lib/modules/<file name>`.
    pub fn modules(&mut self, tree: &Path, modules: &[&str]) -> Result<(), BuildError> {
        for m in modules {
            let name = Path::new(m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let p = tree.join(m);
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            self.file(&format!("lib/modules/{name}"), 0o644, bytes);
        }
        Ok(())
    }

    /// The archive's bytes.
    pub fn bytes(self) -> Result<Vec<u8>, BuildError> {
        let entries = self
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, (name, mode, bytes, dev))| {
                let mut b = cpio::NewcBuilder::new(&name)
                    .mode(mode)
                    .ino(i as u32 + 1)
                    .nlink(1);
                if let Some((major, minor)) = dev {
                    b = b.rdev_major(major).rdev_minor(minor);
                }
                (b, Cursor::new(bytes))
            });
        let mut out = Vec::new();
        cpio::write_cpio(entries, &mut out).map_err(io(Path::new("(initramfs)")))?;
        Ok(out)
    }

    /// Writes the archive to `out` (through a temporary file, so `out` is whole or absent).
    pub fn write(self, out: &Path) -> Result<(), BuildError> {
        let bytes = self.bytes()?;
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, out).map_err(io(out))
    }
}

/// The shared libraries a dynamic binary loads (from `ldd`), empty for a static one.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io(binary))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `ferric-ramdisk` binary to put in as `/init` (stripped on the way).
    pub binary: PathBuf,
    /// The kernel.
    pub kernel: Kernel,
    /// Where `vmlinuz` and `initramfs` go.
    pub out: PathBuf,
    /// zstd level of the initramfs.
    pub level: i32,
    /// PEM files of CA certificates trusted for `https://` images beside Debian's bundle (an
    /// operator's own CA, whose image servers no public CA vouches for).
    pub cas: Vec<PathBuf>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The kernel.
    pub vmlinuz: PathBuf,
    /// The initramfs (zstd-compressed cpio).
    pub initramfs: PathBuf,
    /// Kernel size.
    pub kernel_bytes: u64,
    /// Initramfs size, compressed.
    pub initramfs_bytes: u64,
    /// Initramfs size, uncompressed.
    pub uncompressed_bytes: u64,
    /// Modules included.
    pub modules: usize,
    /// Modules asked for that this kernel does not have.
    pub missing: Vec<String>,
}

/// The CA bundle the ramdisk carries, at the same path as on the build host.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `bundle` with the certificates of each PEM file in `cas` appended. Only `CERTIFICATE`
/// blocks are taken (a private key put in by mistake stays out of the ramdisk), and a file
/// without one is an error that names it.
pub fn with_cas(mut bundle: Vec<u8>, cas: &[PathBuf]) -> Result<Vec<u8>, BuildError> {
    for path in cas {
        let text = std::fs::read(path).map_err(io(path))?;
        let blocks = pem::parse_many(&text).map_err(|e| BuildError::Ca {
            path: path.clone(),
            problem: format!("not PEM: {e}"),
        })?;
        let certs: Vec<&pem::Pem> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
        if certs.is_empty() {
            return Err(BuildError::Ca {
                path: path.clone(),
                problem: "holds no PEM CERTIFICATE block".into(),
            });
        }
        if !bundle.is_empty() && !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        for c in certs {
            bundle.extend_from_slice(pem::encode(c).as_bytes());
        }
    }
    Ok(bundle)
}

/// Builds the ramdisk.
pub fn build(opts: &BuildOptions) -> Result<Built, BuildError> {
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let mut ir = Initramfs::new();
    for d in ["proc", "sys", "dev", "run", "tmp", "etc"] {
        ir.dir(d);
    }
    // The kernel gives init its console through /dev/console before devtmpfs is mounted.
    ir.char_device("dev/console", 0o600, 5, 1);
    ir.char_device("dev/null", 0o666, 1, 3);
    let stripped = opts.out.join("init.stripped");
    run(Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&opts.binary))?;
    ir.file(
        "init",
        0o755,
        std::fs::read(&stripped).map_err(io(&stripped))?,
    );
    let _ = std::fs::remove_file(&stripped);
    for lib in shared_libraries(&opts.binary)? {
        let name = lib.to_string_lossy().trim_start_matches('/').to_owned();
        ir.file(&name, 0o755, std::fs::read(&lib).map_err(io(&lib))?);
    }
    // The CA bundle an `https://` image URL is checked against (Debian's ca-certificates, where
    // the TLS library looks for it).
    let bundle = std::path::Path::new(CA_BUNDLE);
    let certs = std::fs::read(bundle).map_err(|e| BuildError::Io {
        path: bundle.to_owned(),
        source: std::io::Error::new(
            e.kind(),
            format!("{e} (Debian package ca-certificates: images fetched over https need it)"),
        ),
    })?;
    let certs = with_cas(certs, &opts.cas)?;
    for d in ["etc/ssl", "etc/ssl/certs"] {
        ir.dir(d);
    }
    ir.file(CA_BUNDLE.trim_start_matches('/'), 0o644, certs);
    let dep = modules_dep(&opts.kernel)?;
    let (order, missing) = resolve_modules(&dep, MODULES);
    let refs: Vec<&str> = order.iter().map(String::as_str).collect();
    ir.modules(&opts.kernel.modules, &refs)?;
    let load_order: String = order
        .iter()
        .map(|m| format!("{}\n", m.rsplit('/').next().unwrap_or(m)))
        .collect();
    ir.file("lib/modules/load-order", 0o644, load_order.into_bytes());
    let raw = ir.bytes()?;
    let compressed = zstd::bulk::compress(&raw, opts.level).map_err(io(&opts.out))?;
    let initramfs = opts.out.join("initramfs");
    let vmlinuz = opts.out.join("vmlinuz");
    std::fs::write(&initramfs, &compressed).map_err(io(&initramfs))?;
    std::fs::copy(&opts.kernel.vmlinuz, &vmlinuz).map_err(io(&vmlinuz))?;
    Ok(Built {
        kernel_bytes: std::fs::metadata(&vmlinuz).map_err(io(&vmlinuz))?.len(),
        initramfs_bytes: compressed.len() as u64,
        uncompressed_bytes: raw.len() as u64,
        modules: order.len(),
        missing,
        vmlinuz,
        initramfs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_ca_is_appended_without_anything_else_in_its_file() {
        let d = std::env::temp_dir().join(format!("ferric-ca-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let cert = pem::Pem::new("CERTIFICATE", b"the CA's DER".to_vec());
        let key = pem::Pem::new("PRIVATE KEY", b"a key put in by mistake".to_vec());
        let both = d.join("ca.pem");
        std::fs::write(&both, pem::encode_many(&[key.clone(), cert.clone()])).unwrap();
        let bundle = with_cas(
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----".to_vec(),
            std::slice::from_ref(&both),
        )
        .unwrap();
        let blocks = pem::parse_many(&bundle).unwrap();
        assert_eq!(blocks.len(), 2, "Debian's and the operator's");
        assert_eq!(blocks[1], cert);
        assert!(blocks.iter().all(|b| b.tag() == "CERTIFICATE"));

        let only_key = d.join("key.pem");
        std::fs::write(&only_key, pem::encode(&key)).unwrap();
        let err = with_cas(Vec::new(), &[only_key]).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no PEM CERTIFICATE"),
            "{err}"
        );
        let missing = d.join("absent.pem");
        let err = with_cas(Vec::new(), &[missing]).unwrap_err().to_string();
        assert!(err.contains("absent.pem"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn modules_come_with_their_dependencies_first() {
        let dep = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
                   kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
                   kernel/net/core/failover.ko:\n\
                   kernel/drivers/char/ipmi/ipmi_si.ko: kernel/drivers/char/ipmi/ipmi_msghandler.ko\n\
                   kernel/drivers/char/ipmi/ipmi_msghandler.ko:\n\
                   kernel/drivers/md/dm-mod.ko:\n";
        let (order, missing) = resolve_modules(dep, &["virtio_net", "ipmi_si", "dm_mod", "nope"]);
        assert_eq!(
            order,
            [
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/char/ipmi/ipmi_msghandler.ko",
                "kernel/drivers/char/ipmi/ipmi_si.ko",
                "kernel/drivers/md/dm-mod.ko",
            ]
        );
        assert_eq!(missing, ["nope"]);
    }

    #[test]
    fn ldd_output_gives_library_paths() {
        let libs = shared_libraries(Path::new("/bin/true")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
