//! `ferric-testbed`: the real parts the demo and manual experiments need on this host.
//!
//! * `ferric-testbed libvirtd` — make sure libvirtd answers (starting it without systemd);
//! * `ferric-testbed guest-image` — build (once) the small test guest and print
//!   `kernel=PATH` and `initrd=PATH`.

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
    }
}
