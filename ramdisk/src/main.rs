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
    match Cli::parse().command {
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
