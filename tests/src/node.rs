//! A virtual bare-metal node for tier-4 tests: QEMU with an emulated BMC — OpenIPMI's
//! `ipmi_sim` reachable over IPMI-over-LAN and, through QEMU's `ipmi-bmc-extern` and an
//! `isa-ipmi-kcs` interface, from inside the machine as `/dev/ipmi0` — booting Debian's
//! generic kernel (the cloud flavour has no IPMI drivers) and a busybox initramfs that holds
//! `ferric-ramdisk`.

use crate::bmc::SimBmc;
use crate::hv::{run, target_dir};
use crate::initramfs::{BUSYBOX_INIT, Initramfs, WithBusybox};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// IPMI modules, in load order.
const IPMI_MODULES: &[&str] = &[
    "drivers/char/ipmi/ipmi_msghandler.ko",
    "drivers/char/ipmi/ipmi_devintf.ko",
    "drivers/char/ipmi/ipmi_si.ko",
];

/// Kernel and initramfs of a virtual node.
#[derive(Debug, Clone)]
pub struct NodeImage {
    /// Kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
}

/// Debian's generic kernel (downloaded once into `target/node`): its image and module tree.
/// Virtual machines that need drivers the cloud flavour lacks (IPMI, device-mapper, 802.1Q)
/// boot it.
pub fn generic_kernel() -> Result<(PathBuf, PathBuf)> {
    let k = generic_kernel_package()?;
    Ok((k.vmlinuz.clone(), k.tree()))
}

/// The same kernel package, as the ramdisk builder takes it.
pub fn generic_kernel_package() -> Result<ferric_ramdisk::build::Kernel> {
    let dir = target_dir()?.join("node");
    std::fs::create_dir_all(&dir)?;
    // Tests run side by side: one of them downloads and unpacks, the others wait.
    let lock = std::fs::File::create(dir.join(".lock"))?;
    lock.lock()?;
    Ok(ferric_ramdisk::build::debian_kernel(
        "linux-image-amd64",
        &dir,
    )?)
}

/// Builds a node image whose `/init` loads the IPMI drivers and runs `script` (busybox sh,
/// with `ferric-ramdisk` on the PATH); the initramfs goes to `out`.
pub fn node_image(script: &str, out: &Path) -> Result<NodeImage> {
    let (vmlinuz, mods) = generic_kernel()?;
    let ramdisk = crate::bin("ferric-ramdisk")?;
    // Debug builds carry their symbols; the node needs none of them.
    let stripped = out.with_extension("ferric-ramdisk");
    run(Command::new("strip").arg("-o").arg(&stripped).arg(&ramdisk))?;

    let mut ir = Initramfs::new();
    for d in ["proc", "sys", "dev", "tmp"] {
        ir.dir(d);
    }
    let init = format!(
        "{BUSYBOX_INIT}\
         for m in ipmi_msghandler ipmi_devintf ipmi_si; do insmod /lib/modules/$m.ko; done\n\
         echo FERRIC-NODE-UP\n\
         {script}\n\
         while true; do sleep 1; done\n"
    );
    ir.file("init", 0o755, init.into_bytes());
    ir.busybox()?;
    ir.file("bin/ferric-ramdisk", 0o755, std::fs::read(&stripped)?);
    // The binary's shared libraries, where the dynamic loader looks for them.
    let ldd = run(Command::new("ldd").arg(&ramdisk))?;
    for lib in ldd.lines().filter_map(|l| {
        l.split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_owned)
    }) {
        let bytes = std::fs::read(&lib).with_context(|| format!("cannot read {lib}"))?;
        ir.file(lib.trim_start_matches('/'), 0o755, bytes);
    }
    ir.modules(&mods, IPMI_MODULES)?;
    ir.write(out)?;
    let _ = std::fs::remove_file(&stripped);
    Ok(NodeImage {
        kernel: vmlinuz,
        initrd: out.to_owned(),
    })
}

/// QEMU arguments for a small machine (TCG, one vCPU, `memory_mib`, no display) that boots
/// `kernel` and `initrd` directly, its serial console in the file `console`.
pub fn direct_boot_args(
    kernel: &Path,
    initrd: &Path,
    memory_mib: u32,
    console: &Path,
) -> Vec<String> {
    let mut a = ferric_lab::qemu::machine_args("tcg", u64::from(memory_mib));
    a.extend(["-no-reboot", "-append", "console=ttyS0 panic=-1 quiet"].map(String::from));
    for (flag, value) in [
        ("-kernel", kernel.display().to_string()),
        ("-initrd", initrd.display().to_string()),
        ("-serial", format!("file:{}", console.display())),
    ] {
        a.push(flag.into());
        a.push(value);
    }
    a
}

/// Starts `qemu-system-x86_64 args…`, its output in `dir/qemu.log`; killed when dropped.
pub fn spawn_qemu(args: &[String], dir: &Path) -> Result<crate::Proc> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::Proc::spawn(
        Path::new(ferric_lab::qemu::QEMU),
        &args,
        &dir.join("qemu.log"),
    )
    .context("cannot start qemu-system-x86_64 (Debian package qemu-system-x86)")
}

/// A QEMU virtual machine whose BMC is `bmc`; killed when dropped.
#[derive(Debug)]
pub struct VirtualNode {
    qemu: crate::Proc,
    /// Serial console log.
    pub console: PathBuf,
}

impl VirtualNode {
    /// Boots `image` (TCG, 512 MiB) with its KCS interface wired to `bmc`'s VM port.
    pub fn boot(image: &NodeImage, bmc: &SimBmc, dir: &Path) -> Result<VirtualNode> {
        let vm_port = bmc
            .vm_port
            .context("the BMC was started without a VM interface")?;
        let console = dir.join("console.log");
        let mut args = direct_boot_args(&image.kernel, &image.initrd, 512, &console);
        args.extend(ferric_lab::qemu::ipmi_args(vm_port));
        args.extend(["-nic".into(), "none".into()]);
        let qemu = spawn_qemu(&args, dir)?;
        Ok(VirtualNode { qemu, console })
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        self.qemu.running()
    }
}

/// The text after `marker` on the first console line that holds it.
pub fn console_value(console: &Path, marker: &str) -> Option<String> {
    let text = std::fs::read_to_string(console).ok()?;
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, v)| v.trim().to_owned()))
}

/// Waits until the console shows `marker`; its value.
pub fn wait_console(console: &Path, marker: &str, limit: std::time::Duration) -> Result<String> {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = console_value(console, marker) {
            return Ok(v);
        }
        if started.elapsed() > limit {
            bail!(
                "no `{marker}` on the console within {limit:?}; it says:\n{}",
                std::fs::read_to_string(console).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
