//! `ferric-testbed`: the real parts the demo and manual experiments need on this host.
//!
//! * `ferric-testbed libvirtd` — make sure libvirtd answers (starting it without systemd);
//! * `ferric-testbed guest-image` — build (once) the small test guest and print
//!   `kernel=PATH` and `initrd=PATH`;
//! * `ferric-testbed os-image MARKER` — build (once) the small OS disk image the deploy tests
//!   write to bare-metal nodes, and print its path;
//! * `ferric-testbed cloud-image` — build (once) the Debian 12 cloud image the cloud deploy
//!   test and the demo deploy, and print its path.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ferric-testbed")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ensure libvirtd (and virtlogd) run.
    Libvirtd,
    /// Build the test guest's kernel and initramfs and print their paths.
    GuestImage,
    /// Build the small OS image (qcow2) that prints MARKER and its host name, and print its
    /// path.
    OsImage {
        /// What the OS prints on its console.
        marker: String,
    },
    /// Build the Debian 12 cloud image (qcow2) the cloud deploy test and the demo deploy, and
    /// print its path.
    CloudImage,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Libvirtd => ferric_tests::hv::ensure_libvirtd(),
        Cmd::GuestImage => {
            let g = ferric_tests::hv::guest_image()?;
            println!("kernel={}", g.kernel.display());
            println!("initrd={}", g.initrd.display());
            Ok(())
        }
        Cmd::OsImage { marker } => {
            println!("{}", ferric_tests::os_image::build(&marker)?.display());
            Ok(())
        }
        Cmd::CloudImage => {
            println!("{}", ferric_tests::cloud_image::build()?.display());
            Ok(())
        }
    }
}
