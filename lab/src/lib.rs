//! # ferric-lab
//!
//! Racks of virtual bare metal on one machine (`ferric lab`). A rack lives in its own network
//! namespace `ferric-<rack>`:
//!
//! * a provisioning bridge `prov0` that every node's NIC (a tap, iPXE in its option ROM)
//!   plugs into, joined to the host by a veth pair (`flp-<rack>`, `10.248.K.1/24` on the host
//!   side) so that boot services on the host reach it;
//! * a management link, a veth pair (`flm-<rack>`, `10.247.K.1/24` on the host side) whose
//!   namespace end holds one address per BMC (`10.247.K.(10+i)`);
//! * per node: an emulated BMC — OpenIPMI's `ipmi_sim` serving IPMI-over-LAN on
//!   `10.247.K.(10+i):623`, and `/dev/ipmi0` inside the machine through QEMU's
//!   `ipmi-bmc-extern` — and a QEMU machine with a blank disk, started and stopped by the BMC:
//!   `ipmi_sim` calls `ferric lab chassis` (this crate's [`chassis`]) for power and boot
//!   device, which starts QEMU booting from the network or the disk, or stops it.
//!
//! Everything a rack starts or makes is recorded under its directory (`rack.json`, pid files),
//! so that `ferric lab down` removes it all, also after the command that built it crashed.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Administrator user of every lab BMC.
pub const BMC_USER: &str = "admin";
/// UDP port of every lab BMC's LAN interface.
pub const BMC_PORT: u16 = 623;
/// iPXE for the nodes' e1000 NIC (Debian's ipxe-qemu). Its virtio ROMs are never run by
/// QEMU 10's SeaBIOS here, so the nodes get an e1000.
pub const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/pxe-e1000.rom";

/// A node of a rack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    /// `<rack>-n<i>`.
    pub name: String,
    /// Index in the rack, from 0.
    pub index: u32,
    /// NIC MAC address.
    pub mac: String,
    /// BMC address (in the rack's management network).
    pub bmc_ip: String,
    /// Port of the BMC's VM interface (inside the namespace).
    pub vm_port: u16,
    /// Tap device on the provisioning bridge.
    pub tap: String,
}

/// A rack as built (`rack.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rack {
    /// Name (1 to 10 lowercase letters, digits, hyphens).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Network namespace.
    pub netns: String,
    /// Third octet of its subnets.
    pub subnet: u8,
    /// Memory per node, MiB.
    pub memory_mib: u64,
    /// Disk per node, bytes.
    pub disk_bytes: u64,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// The BMCs' administrator password (the rack file is readable by root only).
    pub bmc_password: String,
    /// The `ferric` binary ipmi_sim calls for chassis control.
    pub ferric: PathBuf,
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl Rack {
    /// Host-side address of the management link.
    pub fn mgmt_host_ip(&self) -> String {
        format!("10.247.{}.1", self.subnet)
    }
    /// Host-side address of the provisioning link.
    pub fn prov_host_ip(&self) -> String {
        format!("10.248.{}.1", self.subnet)
    }
    /// Host-side veth of the management link.
    pub fn mgmt_veth(&self) -> String {
        format!("flm-{}", self.name)
    }
    /// Host-side veth of the provisioning link.
    pub fn prov_veth(&self) -> String {
        format!("flp-{}", self.name)
    }
    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("rack `{}` has no node `{name}`", self.name))
    }
    /// A node's directory.
    pub fn node_dir(&self, n: &Node) -> PathBuf {
        self.dir.join(&n.name)
    }
    /// Loads `DIR/rack.json`.
    pub fn load(dir: &Path) -> Result<Rack> {
        let p = dir.join("rack.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("no rack at {} (cannot read {})", dir.display(), p.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a rack file", p.display()))
    }
    fn save(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.dir.join("rack.json");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)?;
        std::io::Write::write_all(&mut f, serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }
}

/// What `ferric lab up` builds.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Rack name.
    pub name: String,
    /// Where its files go.
    pub dir: PathBuf,
    /// Nodes.
    pub nodes: u32,
    /// Memory per node, MiB.
    pub memory_mib: u64,
    /// Disk per node, bytes.
    pub disk_bytes: u64,
    /// `auto`, `kvm` or `tcg`.
    pub accel: String,
    /// The `ferric` binary (for ipmi_sim's chassis control).
    pub ferric: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn ns_ip(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip")
        .args(["netns", "exec", ns, "ip"])
        .args(args))
}

/// KVM when the host's hardware KVM module is loaded; TCG otherwise.
pub fn probe_accel() -> &'static str {
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    if Path::new("/dev/kvm").exists() && hardware {
        "kvm"
    } else {
        "tcg"
    }
}

fn valid_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 10
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("rack name `{name}` must be 1 to 10 lowercase letters, digits or hyphens");
    }
    Ok(())
}

fn pid_alive(pid_file: &Path, needle: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The pid must still be the process we started (pids are reused).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains(needle)
        .then_some(pid)
}

fn kill_wait(pid: i32, limit: Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid);
    let _ = kill(p, Signal::SIGCONT);
    let _ = kill(p, Signal::SIGTERM);
    let started = Instant::now();
    while kill(p, None).is_ok() && is_running(pid) {
        if started.elapsed() > limit {
            let _ = kill(p, Signal::SIGKILL);
        }
        if started.elapsed() > limit * 2 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Running and not a zombie.
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// Builds a rack: namespace, links, bridge, one BMC per node (nodes stay powered off until
/// their BMC powers them on).
pub fn up(o: &UpOptions) -> Result<Rack> {
    valid_name(&o.name)?;
    if o.nodes == 0 || o.nodes > 200 {
        bail!("a rack holds 1 to 200 nodes");
    }
    if o.dir.join("rack.json").exists() {
        bail!(
            "rack `{}` exists at {} (ferric lab down --name {} first)",
            o.name,
            o.dir.display(),
            o.name
        );
    }
    let netns = format!("ferric-{}", o.name);
    if Path::new("/var/run/netns").join(&netns).exists() {
        bail!(
            "network namespace {netns} exists (left over? ferric lab down --name {})",
            o.name
        );
    }
    for tool in ["ipmi_sim", "qemu-system-x86_64", "ip"] {
        if run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            bail!(
                "`{tool}` is not installed (Debian packages openipmi, qemu-system-x86, iproute2)"
            );
        }
    }
    // A /24 pair no interface of this host uses yet, starting from one the name picks.
    let taken = ip(&["-o", "addr", "show"]).unwrap_or_default();
    let first = o.name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % 200;
    let subnet = (0..200)
        .map(|k| 20 + ((first + k) % 200) as u8)
        .find(|k| {
            !taken.contains(&format!(" 10.247.{k}.")) && !taken.contains(&format!(" 10.248.{k}."))
        })
        .context("every lab subnet 10.247.20-219.0/24 is in use")?;
    let accel = match o.accel.as_str() {
        "auto" => probe_accel().to_owned(),
        "kvm" | "tcg" => o.accel.clone(),
        other => bail!("accelerator `{other}` is not auto, kvm or tcg"),
    };
    std::fs::create_dir_all(&o.dir)?;
    let seed: [u8; 3] = rand::random();
    let nodes: Vec<Node> = (0..o.nodes)
        .map(|i| Node {
            name: format!("{}-n{i}", o.name),
            index: i,
            mac: format!(
                "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                seed[0], seed[1], seed[2], i as u8
            ),
            bmc_ip: format!("10.247.{subnet}.{}", 10 + i),
            vm_port: 9000 + i as u16,
            tap: format!("tap{i}"),
        })
        .collect();
    let rack = Rack {
        name: o.name.clone(),
        dir: o.dir.clone(),
        netns: netns.clone(),
        subnet,
        memory_mib: o.memory_mib,
        disk_bytes: o.disk_bytes,
        accel,
        bmc_password: hex::encode(rand::random::<[u8; 8]>()), // IPMI passwords are at most 20 bytes
        ferric: o.ferric.clone(),
        nodes,
    };
    // Written first: whatever follows fails, `down` finds what was made.
    rack.save()?;
    if let Err(e) = build(&rack) {
        let _ = down(&rack.dir);
        return Err(e.context(format!(
            "building rack `{}` failed; removed what was made",
            rack.name
        )));
    }
    Ok(rack)
}

fn build(rack: &Rack) -> Result<()> {
    let ns = rack.netns.as_str();
    ip(&["netns", "add", ns])?;
    ns_ip(ns, &["link", "set", "lo", "up"])?;
    // Management link: the host reaches every BMC through it.
    let (mh, ph) = (rack.mgmt_veth(), rack.prov_veth());
    ip(&[
        "link", "add", &mh, "type", "veth", "peer", "name", "mgmt0", "netns", ns,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", rack.mgmt_host_ip()),
        "dev",
        &mh,
    ])?;
    ip(&["link", "set", &mh, "up"])?;
    ns_ip(ns, &["link", "set", "mgmt0", "up"])?;
    for n in &rack.nodes {
        ns_ip(
            ns,
            &["addr", "add", &format!("{}/24", n.bmc_ip), "dev", "mgmt0"],
        )?;
    }
    // Provisioning bridge, joined to the host.
    ns_ip(ns, &["link", "add", "prov0", "type", "bridge"])?;
    ns_ip(ns, &["link", "set", "prov0", "up"])?;
    ip(&[
        "link", "add", &ph, "type", "veth", "peer", "name", "uplink0", "netns", ns,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", rack.prov_host_ip()),
        "dev",
        &ph,
    ])?;
    ip(&["link", "set", &ph, "up"])?;
    ns_ip(ns, &["link", "set", "uplink0", "master", "prov0", "up"])?;
    for n in &rack.nodes {
        ns_ip(ns, &["tuntap", "add", "dev", &n.tap, "mode", "tap"])?;
        ns_ip(ns, &["link", "set", &n.tap, "master", "prov0", "up"])?;
        let dir = rack.node_dir(n);
        std::fs::create_dir_all(&dir)?;
        let disk = std::fs::File::create(dir.join("disk.img"))?;
        disk.set_len(rack.disk_bytes)?;
        std::fs::write(dir.join("boot"), "default")?;
        start_bmc(rack, n)?;
    }
    for n in &rack.nodes {
        wait_bmc(rack, n)?;
    }
    // The BMCs' LAN addresses are served by a relay in front of them, which can lose
    // datagrams on purpose (`bmc-loss`).
    let log = std::fs::File::create(rack.dir.join("relay.log"))?;
    let pid = spawn_detached(
        Command::new("ip")
            .args(["netns", "exec", &rack.netns])
            .arg(&rack.ferric)
            .args(["lab", "relay", "--dir"])
            .arg(&rack.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    std::fs::write(rack.dir.join("relay.pid"), pid.to_string())?;
    let started = Instant::now();
    loop {
        let out =
            run(Command::new("ip").args(["netns", "exec", ns, "ss", "-lun"])).unwrap_or_default();
        if rack
            .nodes
            .iter()
            .all(|n| out.contains(&format!("{}:{BMC_PORT}", n.bmc_ip)))
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!(
                "the BMC relay did not come up: {}",
                std::fs::read_to_string(rack.dir.join("relay.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where a node's ipmi_sim listens inside the namespace (the relay forwards to it).
fn backend_port(n: &Node) -> u16 {
    7000 + n.index as u16
}

/// The rack's IPv6 prefix on the provisioning bridge, `fd00:fe:0:K::/64` (unique local).
pub fn ra_prefix(subnet: u8) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0xfe, 0, u16::from(subnet), 0, 0, 0, 0)
}

/// A Router Advertisement (RFC 4861, 4.2) that is not a default router and carries one
/// on-link, autonomous prefix: enough for a node's IPv6 autoconfiguration to finish at once
/// (iPXE otherwise waits about 16 s for a router before it goes on).
pub fn router_advertisement(prefix: std::net::Ipv6Addr) -> Vec<u8> {
    let mut p = vec![
        134, 0, 0, 0, // type, code, checksum (the kernel fills it in)
        64, 0, // current hop limit, flags
        0, 0, // router lifetime 0: not a default router
        0, 0, 0, 0, // reachable time
        0, 0, 0, 0, // retrans timer
        3, 4, 64, 0xc0, // prefix information: length 4 (32 bytes), /64, on-link + autonomous
    ];
    p.extend_from_slice(&86400u32.to_be_bytes()); // valid lifetime
    p.extend_from_slice(&14400u32.to_be_bytes()); // preferred lifetime
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&prefix.octets());
    p
}

/// Sends router advertisements on `ifname` every three seconds (inside the rack's namespace).
fn advertise(ifname: &str, subnet: u8) {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6, sendto, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let Ok(fd) = socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::IcmpV6,
    ) else {
        eprintln!("no raw ICMPv6 socket: router advertisements are off");
        return;
    };
    // Neighbor discovery messages must arrive with hop limit 255.
    let _ = setsockopt(&fd, sockopt::Ipv6MulticastHops, &255);
    let ra = router_advertisement(ra_prefix(subnet));
    loop {
        if let Ok(index) = nix::net::if_::if_nametoindex(ifname) {
            let to = SockaddrIn6::from(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                0,
                0,
                index,
            ));
            // Fails while the bridge's link-local address is still tentative: next round.
            if let Err(e) = sendto(fd.as_raw_fd(), &ra, &to, MsgFlags::empty()) {
                eprintln!("router advertisement on {ifname} not sent: {e}");
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// `ferric lab relay`: serves every BMC's LAN address of the rack (inside its namespace) and
/// forwards to the node's ipmi_sim, dropping the share of datagrams each way that the node's
/// `bmc-loss` fault names (re-read every half second); and sends IPv6 router advertisements
/// on the provisioning bridge.
pub fn relay(dir: &Path) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsFd;
    let rack = Rack::load(dir)?;
    struct Front {
        sock: UdpSocket,
        node: Node,
        loss: u32,
        // One socket toward the BMC per client, so that answers find their way back.
        backs: Vec<(SocketAddr, UdpSocket)>,
    }
    let mut fronts: Vec<Front> = rack
        .nodes
        .iter()
        .map(|n| {
            Ok(Front {
                sock: UdpSocket::bind((n.bmc_ip.as_str(), BMC_PORT))
                    .with_context(|| format!("cannot bind {}:{BMC_PORT}", n.bmc_ip))?,
                node: n.clone(),
                loss: 0,
                backs: Vec::new(),
            })
        })
        .collect::<Result<_>>()?;
    for f in &fronts {
        f.sock.set_nonblocking(true)?;
    }
    let subnet = rack.subnet;
    std::thread::Builder::new()
        .name("ferric-lab-ra".into())
        .spawn(move || advertise("prov0", subnet))?;
    let mut reread = Instant::now() - Duration::from_secs(1);
    let mut buf = [0u8; 2048];
    let lost = |pct: u32| pct > 0 && rand::random::<u32>() % 100 < pct;
    loop {
        if reread.elapsed() >= Duration::from_millis(500) {
            reread = Instant::now();
            if !dir.join("rack.json").exists() {
                return Ok(()); // the rack is gone
            }
            for f in &mut fronts {
                f.loss = faults(&rack.node_dir(&f.node))
                    .iter()
                    .find_map(|l| {
                        l.strip_prefix("bmc-loss ")
                            .and_then(|p| p.trim().parse().ok())
                    })
                    .unwrap_or(0);
            }
        }
        let mut fds: Vec<PollFd> = Vec::new();
        for f in &fronts {
            fds.push(PollFd::new(f.sock.as_fd(), PollFlags::POLLIN));
            for (_, b) in &f.backs {
                fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
            }
        }
        let _ = poll(&mut fds, PollTimeout::from(200u16));
        drop(fds);
        for f in &mut fronts {
            while let Ok((n, from)) = f.sock.recv_from(&mut buf) {
                if lost(f.loss) {
                    continue;
                }
                if !f.backs.iter().any(|(a, _)| *a == from) {
                    let b = UdpSocket::bind("127.0.0.1:0")?;
                    b.connect(("127.0.0.1", backend_port(&f.node)))?;
                    b.set_nonblocking(true)?;
                    f.backs.push((from, b));
                }
                if let Some((_, b)) = f.backs.iter().find(|(a, _)| *a == from) {
                    let _ = b.send(&buf[..n]);
                }
            }
            for (client, b) in &f.backs {
                while let Ok(n) = b.recv(&mut buf) {
                    if !lost(f.loss) {
                        let _ = f.sock.send_to(&buf[..n], client);
                    }
                }
            }
        }
    }
}

fn start_bmc(rack: &Rack, n: &Node) -> Result<()> {
    let dir = rack.node_dir(n);
    let lan = format!(
        r#"name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  serial 15 127.0.0.1 {vm} codec VM
  chassis_control "{ferric} lab chassis --dir {rackdir} --node {name}"
  user 2 true "{user}" "{password}" admin 16 none md2 md5 straight
"#,
        name = n.name,
        port = backend_port(n),
        guid = hex::encode(rand::random::<[u8; 16]>()),
        vm = n.vm_port,
        ferric = rack.ferric.display(),
        rackdir = rack.dir.display(),
        user = BMC_USER,
        password = rack.bmc_password,
    );
    std::fs::write(dir.join("lan.conf"), lan)?;
    std::fs::write(
        dir.join("bmc.emu"),
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         sel_enable 0x20 1000 0x0a\n\
         mc_enable 0x20\n",
    )?;
    let log = std::fs::File::create(dir.join("bmc.log"))?;
    let child = spawn_detached(
        Command::new("ip")
            .args(["netns", "exec", &rack.netns, "ipmi_sim", "-n", "-c"])
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("bmc-state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    std::fs::write(dir.join("bmc.pid"), child.to_string())?;
    Ok(())
}

/// Spawns a process in its own session (it outlives this command and ignores its terminal).
fn spawn_detached(cmd: &mut Command) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd.spawn().context("cannot start a process")?;
    Ok(child.id())
}

fn wait_bmc(rack: &Rack, n: &Node) -> Result<()> {
    // ipmi_sim is ready when its LAN socket is bound in the namespace.
    let started = Instant::now();
    let want = format!("127.0.0.1:{}", backend_port(n));
    loop {
        let out = run(Command::new("ip").args(["netns", "exec", &rack.netns, "ss", "-lun"]))
            .unwrap_or_default();
        if out.contains(&want) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!(
                "the BMC of {} did not come up: {}",
                n.name,
                std::fs::read_to_string(rack.node_dir(n).join("bmc.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `ferric lab status` shows of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node.
    pub name: String,
    /// `on` or `off` (whether its QEMU runs).
    pub power: String,
    /// Next boot device as the BMC set it.
    pub boot: String,
    /// `ipmi://admin@IP:623`.
    pub bmc: String,
    /// Whether the BMC process runs.
    pub bmc_up: bool,
    /// NIC MAC.
    pub mac: String,
    /// Active faults.
    pub faults: Vec<String>,
    /// Last console lines.
    pub console_tail: Vec<String>,
}

/// The QEMU pid of a running node.
pub fn qemu_pid(rack: &Rack, n: &Node) -> Option<i32> {
    let dir = rack.node_dir(n);
    pid_alive(&dir.join("qemu.pid"), &dir.display().to_string()).filter(|p| is_running(*p))
}

fn bmc_pid(rack: &Rack, n: &Node) -> Option<i32> {
    let dir = rack.node_dir(n);
    pid_alive(&dir.join("bmc.pid"), &dir.display().to_string())
}

/// Status of every node.
pub fn status(rack: &Rack) -> Vec<NodeStatus> {
    rack.nodes
        .iter()
        .map(|n| {
            let dir = rack.node_dir(n);
            let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
            let lines: Vec<String> = console
                .lines()
                .map(|l| l.trim_end().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            NodeStatus {
                name: n.name.clone(),
                power: if qemu_pid(rack, n).is_some() {
                    "on"
                } else {
                    "off"
                }
                .into(),
                boot: std::fs::read_to_string(dir.join("boot"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                bmc: format!("ipmi://{BMC_USER}@{}:{BMC_PORT}", n.bmc_ip),
                bmc_up: bmc_pid(rack, n).is_some(),
                mac: n.mac.clone(),
                faults: faults(&dir),
                console_tail: lines[lines.len().saturating_sub(3)..].to_vec(),
            }
        })
        .collect()
}

fn faults(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("faults"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

fn has_fault(dir: &Path, f: &str) -> bool {
    faults(dir)
        .iter()
        .any(|x| x.split_whitespace().next() == Some(f))
}

/// Removes a rack: every process, the namespace with its links, bridge and taps, and its
/// directory. Works from what `rack.json` and the pid files say, so also after a crash.
pub fn down(dir: &Path) -> Result<()> {
    let rack = Rack::load(dir)?;
    for n in &rack.nodes {
        if let Some(pid) = qemu_pid(&rack, n) {
            kill_wait(pid, Duration::from_secs(3));
        }
        if let Some(pid) = bmc_pid(&rack, n) {
            kill_wait(pid, Duration::from_secs(3));
        }
    }
    if let Some(pid) = pid_alive(&rack.dir.join("relay.pid"), &rack.dir.display().to_string()) {
        kill_wait(pid, Duration::from_secs(3));
    }
    // Deleting the namespace removes the bridge, the taps and the namespace ends of the veth
    // pairs, which takes the host ends with them.
    if Path::new("/var/run/netns").join(&rack.netns).exists() {
        ip(&["netns", "del", &rack.netns])?;
    }
    for v in [rack.mgmt_veth(), rack.prov_veth()] {
        if Path::new("/sys/class/net").join(&v).exists() {
            let _ = ip(&["link", "del", &v]);
        }
    }
    std::fs::remove_dir_all(&rack.dir)
        .with_context(|| format!("cannot remove {}", rack.dir.display()))?;
    Ok(())
}

/// Faults `ferric lab fault` injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The BMC stops answering (its process is stopped).
    BmcSilent,
    /// The BMC's LAN loses this percentage of datagrams each way.
    BmcLoss(u32),
    /// Power commands are accepted but change nothing.
    PowerStuck,
    /// The disk fails every read and write (from the next power-on).
    DiskFail,
    /// Every fault is lifted.
    Clear,
}

/// Injects (or clears) a fault on a node.
pub fn fault(rack: &Rack, node: &str, f: &Fault) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let n = rack.node(node)?;
    let dir = rack.node_dir(n);
    let mut list = faults(&dir);
    let bmc = bmc_pid(rack, n);
    match f {
        Fault::BmcSilent => {
            let bmc = bmc.with_context(|| format!("the BMC of {node} is not running"))?;
            kill(Pid::from_raw(bmc), Signal::SIGSTOP)?;
            list.push("bmc-silent".into());
        }
        Fault::BmcLoss(pct) => {
            if *pct > 100 {
                bail!("loss must be 0 to 100 percent");
            }
            // The rack's relay drops this share each way (this host has no netem).
            list.retain(|l| !l.starts_with("bmc-loss"));
            list.push(format!("bmc-loss {pct}"));
        }
        Fault::PowerStuck => list.push("power-stuck".into()),
        Fault::DiskFail => list.push("disk-fail".into()),
        Fault::Clear => {
            // Clearing works on a node whose BMC died too: the faults file is what counts.
            if let Some(bmc) = bmc {
                let _ = kill(Pid::from_raw(bmc), Signal::SIGCONT);
            }
            list.clear();
        }
    }
    list.dedup();
    std::fs::write(dir.join("faults"), list.join("\n"))?;
    Ok(())
}

/// Starts a node's QEMU (booting from the network or its disk, as the BMC last set).
fn power_on(rack: &Rack, n: &Node) -> Result<()> {
    let dir = rack.node_dir(n);
    let boot = std::fs::read_to_string(dir.join("boot")).unwrap_or_default();
    let order = if boot.trim() == "pxe" { "n" } else { "c" };
    let disk = dir.join("disk.img");
    let drive = if has_fault(&dir, "disk-fail") {
        // blkdebug fails every read and write with EIO.
        let conf = dir.join("blkdebug.conf");
        std::fs::write(
            &conf,
            "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n\n[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\n",
        )?;
        format!(
            "file=blkdebug:{}:{},format=raw,if=virtio",
            conf.display(),
            disk.display()
        )
    } else {
        format!("file={},format=raw,if=virtio", disk.display())
    };
    let log = std::fs::File::create(dir.join("qemu.log"))?;
    let out = Command::new("qemu-system-x86_64")
        .args(["-name", &n.name, "-machine", "pc", "-accel", &rack.accel])
        .args(["-m", &rack.memory_mib.to_string(), "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-vga", "none"])
        .arg("-chardev")
        .arg(format!(
            "file,id=con,path={},append=on",
            dir.join("console.log").display()
        ))
        .args(["-serial", "chardev:con"])
        // The firmware's own log (SeaBIOS writes it to port 0x402): why a boot failed.
        .arg("-chardev")
        .arg(format!(
            "file,id=fw,path={},append=on",
            dir.join("firmware.log").display()
        ))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=fw"])
        .args(["-drive", &drive])
        .arg("-netdev")
        .arg(format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            n.tap
        ))
        .arg("-device")
        .arg(format!("e1000,netdev=n0,mac={},romfile={IPXE_ROM}", n.mac))
        .args(["-boot", &format!("order={order}")])
        .arg("-chardev")
        .arg(format!(
            "socket,id=ipmi0,host=127.0.0.1,port={},reconnect-ms=1000",
            n.vm_port
        ))
        .args(["-device", "ipmi-bmc-extern,id=bmc0,chardev=ipmi0"])
        .args(["-device", "isa-ipmi-kcs,bmc=bmc0"])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ))
        .arg("-pidfile")
        .arg(dir.join("qemu.pid"))
        .arg("-daemonize")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot start qemu-system-x86_64")?;
    if !out.success() {
        bail!(
            "QEMU for {} failed: {}",
            n.name,
            std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
        );
    }
    Ok(())
}

fn power_off(rack: &Rack, n: &Node) {
    if let Some(pid) = qemu_pid(rack, n) {
        kill_wait(pid, Duration::from_secs(5));
    }
}

/// ACPI power button through QMP.
fn acpi_shutdown(rack: &Rack, n: &Node) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let sock = rack.node_dir(n).join("qmp.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .with_context(|| format!("cannot reach QEMU's QMP socket {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    line.clear();
    r.read_line(&mut line)?;
    s.write_all(b"{\"execute\":\"system_powerdown\"}\n")?;
    line.clear();
    r.read_line(&mut line)?;
    Ok(())
}

/// `ferric lab chassis`: ipmi_sim's chassis-control program for one node. ipmi_sim runs it as
/// `… [0x20] get power boot` (answer lines `power:1`, `boot:pxe`) and `… [0x20] set power
/// 1|0`, `set boot pxe|default|cdrom|bios|none`, `set reset 1`, `set shutdown 1`. It reads the
/// output to the end, so QEMU is started fully detached (`-daemonize`).
pub fn chassis(dir: &Path, node: &str, args: &[String]) -> Result<String> {
    let rack = Rack::load(dir)?;
    let n = rack.node(node)?.clone();
    let ndir = rack.node_dir(&n);
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("0x"))
        .collect();
    let stuck = has_fault(&ndir, "power-stuck");
    let mut out = String::new();
    match args.split_first() {
        Some((&"get", keys)) => {
            for k in keys {
                match *k {
                    "power" => out.push_str(&format!(
                        "power:{}\n",
                        u8::from(qemu_pid(&rack, &n).is_some())
                    )),
                    "boot" => out.push_str(&format!(
                        "boot:{}\n",
                        std::fs::read_to_string(ndir.join("boot"))
                            .unwrap_or_else(|_| "default".into())
                            .trim()
                    )),
                    _ => {}
                }
            }
        }
        Some((&"set", pairs)) => {
            for kv in pairs.chunks(2) {
                match kv {
                    ["power", v] if !stuck => {
                        let on = qemu_pid(&rack, &n).is_some();
                        if *v == "1" && !on {
                            power_on(&rack, &n)?;
                        } else if *v == "0" && on {
                            power_off(&rack, &n);
                        }
                    }
                    ["reset", "1"] if !stuck => {
                        power_off(&rack, &n);
                        power_on(&rack, &n)?;
                    }
                    ["shutdown", "1"] if !stuck => acpi_shutdown(&rack, &n)?,
                    ["boot", v] => std::fs::write(ndir.join("boot"), v)?,
                    _ => {}
                }
            }
        }
        _ => bail!("usage: ferric lab chassis --dir DIR --node NODE [0x20] get|set …"),
    }
    Ok(out)
}
