//! A hypervisor host in a virtual machine, for the paths this machine's kernel cannot take (it
//! has no device-mapper for LVM and no 802.1Q for VLANs).
//!
//! Debian's generic kernel boots under QEMU with this machine's root filesystem shared
//! read-only over virtio-9p beneath a tmpfs overlay: the VM runs the very same programs
//! (libvirtd, lvm2, iproute2, the freshly built `ferric-agent`) on its own kernel, and what it
//! writes stays in its memory. User-mode networking reaches this machine's loopback as
//! [`HostVm::HOST`]. A second, writable share is a mailbox: the test drops a shell script in,
//! the VM runs it and leaves its output and exit status beside it.

use crate::initramfs::{BUSYBOX_INIT, Initramfs, VIRTIO_MODULES, WithBusybox, module_stem};
use crate::node::{direct_boot_args, generic_kernel, spawn_qemu};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Modules the VM loads after virtio's, in dependency order: 9p for its root, overlayfs, the
/// network card, and what the hypervisor paths under test need (loop devices, device-mapper,
/// 802.1Q, bridges, veth, tap).
const MODULES: &[&str] = &[
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
    "fs/overlayfs/overlay.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/block/loop.ko",
    "drivers/md/dm-mod.ko",
    "net/llc/llc.ko",
    "net/802/stp.ko",
    "net/802/garp.ko",
    "net/802/mrp.ko",
    "net/8021q/8021q.ko",
    "net/bridge/bridge.ko",
    "drivers/net/veth.ko",
    "drivers/net/tun.ko",
];

/// Where the mailbox is mounted inside the VM.
pub const MAIL: &str = "/ferric-mail";

/// Stage two, run by the host's `/bin/sh` as PID 1 once the overlay root is in place.
const STAGE2: &str = r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs tmpfs /run
mkdir -p /run/lock
hostname ferric-hostvm
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
# The libvirt and Ferric state of the machine that shares its files is not this host's.
rm -rf /etc/libvirt/storage /etc/libvirt/qemu /etc/libvirt/network /var/lib/libvirt \
  /var/cache/libvirt /var/log/libvirt /var/lib/ferric /var/lib/ferric-agent
mkdir -p /etc/libvirt /var/lib/libvirt /var/log/libvirt
printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' > /etc/libvirt/qemu.conf
echo FERRIC-HOSTVM-UP
cd /ferric-mail
n=0
while :; do
  if [ -f cmd-$n ]; then
    sh cmd-$n > out-$n.part 2>&1 < /dev/null
    echo $? > rc-$n.part
    mv out-$n.part out-$n
    mv rc-$n.part rc-$n
    n=$((n+1))
  else
    sleep 0.1
  fi
done
"#;

/// A running VM; QEMU is killed when it is dropped.
#[derive(Debug)]
pub struct HostVm {
    qemu: crate::Proc,
    mail: PathBuf,
    next: u32,
    /// Serial console log.
    pub console: PathBuf,
}

impl HostVm {
    /// This machine's loopback as the VM reaches it.
    pub const HOST: &'static str = "10.0.2.2";

    /// Boots a VM (TCG, one vCPU, `memory_mib`) with its files in `dir`, and waits until it
    /// takes commands.
    pub async fn boot(dir: &Path, memory_mib: u32) -> Result<HostVm> {
        let (kernel, tree) = generic_kernel()?;
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail)?;
        std::fs::write(mail.join("init.sh"), STAGE2)?;
        let mut ir = Initramfs::new();
        for d in ["proc", "sys", "dev", "host", "rw", "newroot"] {
            ir.dir(d);
        }
        let all = [VIRTIO_MODULES, MODULES].concat();
        let modules: Vec<&str> = all.iter().map(|m| module_stem(m)).collect();
        let init = format!(
            "{BUSYBOX_INIT}\
             for m in {modules}; do insmod /lib/modules/$m.ko || echo \"FERRIC-HOSTVM-FAILED insmod $m\"; done\n\
             fail() {{ echo \"FERRIC-HOSTVM-FAILED $1\"; poweroff -f; }}\n\
             mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || fail 'mount the root share'\n\
             mount -t tmpfs -o size=75% tmpfs /rw || fail 'mount tmpfs'\n\
             mkdir /rw/upper /rw/work\n\
             mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || fail 'mount the overlay'\n\
             mkdir -p /newroot{MAIL}\n\
             mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 mail /newroot{MAIL} || fail 'mount the mailbox'\n\
             for d in dev proc sys; do mount --move /$d /newroot/$d; done\n\
             exec switch_root /newroot /bin/sh {MAIL}/init.sh\n",
            modules = modules.join(" "),
        );
        ir.file("init", 0o755, init.into_bytes());
        ir.busybox()?;
        ir.modules(&tree, &all)?;
        let initrd = dir.join("hostvm.cpio");
        ir.write(&initrd)?;

        let console = dir.join("console.log");
        let mut args = direct_boot_args(&kernel, &initrd, memory_mib, &console);
        args.extend([
            "-virtfs".into(),
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
                .into(),
            "-virtfs".into(),
            format!(
                "local,path={},mount_tag=mail,security_model=none",
                mail.display()
            ),
            "-nic".into(),
            "user,model=virtio-net-pci".into(),
        ]);
        let qemu = spawn_qemu(&args, dir)?;
        let mut vm = HostVm {
            qemu,
            mail,
            next: 0,
            console,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&vm.console).unwrap_or_default();
            if text.contains("FERRIC-HOSTVM-UP") {
                return Ok(vm);
            }
            if text.contains("FERRIC-HOSTVM-FAILED") || !vm.running() || Instant::now() > deadline {
                bail!("the host VM did not come up; its console says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The mailbox as this machine sees it ([`MAIL`] inside the VM).
    pub fn mail(&self) -> &Path {
        &self.mail
    }

    /// Runs `script` (sh) in the VM; its exit status and output (stdout and stderr).
    pub async fn run(&mut self, script: &str, limit: Duration) -> Result<(i32, String)> {
        let n = self.next;
        self.next += 1;
        let part = self.mail.join(format!("cmd-{n}.part"));
        std::fs::write(&part, script)?;
        std::fs::rename(&part, self.mail.join(format!("cmd-{n}")))?;
        let rc = self.mail.join(format!("rc-{n}"));
        let deadline = Instant::now() + limit;
        while !rc.exists() {
            if !self.running() || Instant::now() > deadline {
                bail!(
                    "`{script}` did not finish in the host VM within {limit:?}; its console says:\n{}",
                    std::fs::read_to_string(&self.console).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let code = std::fs::read_to_string(&rc)?
            .trim()
            .parse()
            .context("exit status")?;
        Ok((
            code,
            std::fs::read_to_string(self.mail.join(format!("out-{n}")))?,
        ))
    }

    /// Runs `script` in the VM and returns its output; an error when it exits non-zero.
    pub async fn exec(&mut self, script: &str, limit: Duration) -> Result<String> {
        let (code, out) = self.run(script, limit).await?;
        if code != 0 {
            bail!("`{script}` failed in the host VM (exit {code}): {out}");
        }
        Ok(out)
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        self.qemu.running()
    }
}
