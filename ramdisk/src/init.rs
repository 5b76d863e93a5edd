//! The ramdisk as PID 1: the file systems a Linux userland needs, the kernel modules the
//! builder put in (`/lib/modules/load-order`), then the agent — retried, never exited (the
//! kernel panics when PID 1 ends).

use std::path::Path;
use std::time::Duration;

/// Mounts `/proc`, `/sys`, `/dev`, `/run` and `/tmp`.
pub fn mount_all() {
    use nix::mount::{MsFlags, mount};
    for (src, dir, fs) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ] {
        let _ = std::fs::create_dir_all(dir);
        if let Err(e) = mount(Some(src), dir, Some(fs), MsFlags::empty(), None::<&str>) {
            // Already mounted (devtmpfs with CONFIG_DEVTMPFS_MOUNT) is fine.
            if e != nix::errno::Errno::EBUSY {
                println!("ferric-ramdisk: cannot mount {dir}: {e}");
            }
        }
    }
}

/// Loads the modules named in `dir/load-order` (dependencies first), skipping those whose
/// hardware is absent; returns how many loaded.
pub fn load_modules(dir: &Path) -> usize {
    let Ok(order) = std::fs::read_to_string(dir.join("load-order")) else {
        return 0;
    };
    let mut loaded = 0;
    for m in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Ok(f) = std::fs::File::open(dir.join(m)) else {
            println!("ferric-ramdisk: module {m} is missing");
            continue;
        };
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            // Built in or loaded already; no such device.
            Err(nix::errno::Errno::EEXIST | nix::errno::Errno::ENODEV) => {}
            Err(e) => println!("ferric-ramdisk: module {m}: {e}"),
        }
    }
    loaded
}

/// Mounts the UEFI variables (`efivarfs`, a module) when the firmware was UEFI.
pub fn mount_efivars() {
    use nix::mount::{MsFlags, mount};
    let dir = "/sys/firmware/efi/efivars";
    if !Path::new("/sys/firmware/efi").is_dir() {
        return;
    }
    match mount(
        Some("efivarfs"),
        dir,
        Some("efivarfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => println!("ferric-ramdisk: cannot mount {dir}: {e}"),
    }
}

/// PID 1: set up, then run the ramdisk agent until the machine is rebooted or powered off.
pub fn run() -> ! {
    mount_all();
    let n = load_modules(Path::new("/lib/modules"));
    println!("ferric-ramdisk: {n} modules loaded");
    mount_efivars();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("ferric-ramdisk: cannot start the async runtime: {e}");
            halt()
        }
    };
    loop {
        match rt.block_on(crate::agent::main()) {
            Ok(()) => println!("ferric-ramdisk: the agent stopped; starting it again"),
            Err(e) => println!("ferric-ramdisk: {e}; trying again in 5 s"),
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn halt() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
