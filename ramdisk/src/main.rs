//! `ferric-ramdisk`: the deploy ramdisk's tool on a bare-metal node.

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use ferric_agent::bmc::inband::Inband;
use ferric_proto::plan::BootDevice;
use std::path::PathBuf;

/// The Ferric deploy ramdisk.
#[derive(Debug, Parser)]
#[command(name = "ferric-ramdisk", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// This node's BMC, in-band through the kernel's IPMI device.
    #[command(subcommand)]
    Bmc(BmcCmd),
    /// Build the kernel and initramfs the boot services hand to nodes (this binary is their
    /// `/init`); prints what it built and its size.
    Build {
        /// Where `vmlinuz` and `initramfs` go.
        #[arg(long)]
        out: PathBuf,
        /// An unpacked Debian kernel package (`boot/vmlinuz-*`, `lib/modules/VERSION`);
        /// downloaded (`linux-image-amd64`) into --cache when absent.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Where a downloaded kernel is kept.
        #[arg(long, default_value = "/var/cache/ferric/kernel")]
        cache: PathBuf,
        /// zstd level of the initramfs.
        #[arg(long, default_value_t = 19)]
        level: i32,
        /// The binary to put in (this one when absent).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// A PEM file of CA certificates to trust for `https://` image URLs beside Debian's
        /// bundle (repeatable): the CA of an operator's own image server.
        #[arg(long = "ca", value_name = "FILE")]
        cas: Vec<PathBuf>,
    },
    /// Run the ramdisk's agent without being PID 1 (what `/init` does after its setup).
    Agent,
}

#[derive(Debug, Subcommand)]
enum BmcCmd {
    /// Print the BMC's identity, LAN settings and next boot device as JSON.
    Info {
        /// The kernel's IPMI device.
        #[arg(long, default_value = "/dev/ipmi0")]
        device: PathBuf,
    },
    /// Set the next boot device.
    Bootdev {
        /// Device.
        #[arg(value_enum)]
        target: Target,
        /// For every boot, not only the next one.
        #[arg(long)]
        persistent: bool,
        /// UEFI boot.
        #[arg(long)]
        uefi: bool,
        /// The kernel's IPMI device.
        #[arg(long, default_value = "/dev/ipmi0")]
        device: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Target {
    Pxe,
    Disk,
    Bios,
    Cdrom,
}

fn main() -> Result<()> {
    // As the initramfs's /init the binary is the machine's first process.
    if std::process::id() == 1 {
        ferric_ramdisk::init::run();
    }
    match Cli::parse().command {
        Cmd::Build {
            out,
            kernel,
            cache,
            level,
            binary,
            cas,
        } => {
            let kernel = match kernel {
                Some(k) => ferric_ramdisk::build::unpacked(&k)?,
                None => ferric_ramdisk::build::debian_kernel("linux-image-amd64", &cache)?,
            };
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            let b = ferric_ramdisk::build::build(&ferric_ramdisk::build::BuildOptions {
                binary,
                kernel,
                out,
                level,
                cas,
            })?;
            println!(
                "kernel     {} ({:.1} MiB)
initramfs  {} ({:.1} MiB compressed, {:.1} MiB unpacked, {} modules)",
                b.vmlinuz.display(),
                b.kernel_bytes as f64 / 1048576.0,
                b.initramfs.display(),
                b.initramfs_bytes as f64 / 1048576.0,
                b.uncompressed_bytes as f64 / 1048576.0,
                b.modules
            );
            if !b.missing.is_empty() {
                println!("not in this kernel: {}", b.missing.join(", "));
            }
        }
        Cmd::Agent => {
            tokio::runtime::Runtime::new()?.block_on(ferric_ramdisk::agent::main())?;
        }
        Cmd::Bmc(BmcCmd::Info { device }) => {
            let mut dev = Inband::open(&device)?;
            let info = ferric_ramdisk::bmc_info(&mut dev)?;
            println!("{}", serde_json::to_string(&info)?);
        }
        Cmd::Bmc(BmcCmd::Bootdev {
            target,
            persistent,
            uefi,
            device,
        }) => {
            let mut dev = Inband::open(&device)?;
            let d = match target {
                Target::Pxe => BootDevice::Pxe,
                Target::Disk => BootDevice::Disk,
                Target::Bios => BootDevice::Bios,
                Target::Cdrom => BootDevice::Cdrom,
            };
            dev.set_boot_device(d, persistent, uefi)?;
            let now = dev.boot_device()?;
            println!("{}", serde_json::to_string(&now)?);
        }
    }
    Ok(())
}
