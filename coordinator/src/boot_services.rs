//! Boot services on the provisioning network (`--boot-services IFACE`, off by default): the
//! DHCP server ([`ferric_netboot::dhcp`], full or proxy), TFTP with Debian's iPXE binaries,
//! and an HTTP server on the interface's address for the per-node iPXE scripts, the ramdisk's
//! kernel and initramfs, and images. The rules (which MACs, which script) are the
//! conductor's ([`crate::conductor::network_boot`]); this module moves datagrams and bytes.

use crate::Shared;
use crate::conductor::network_boot::BootSite;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferric_netboot::dhcp::{Config as DhcpConfig, Dhcp, Mode, parse_mac};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How addresses are handed out on the provisioning network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpMode {
    /// Ferric is the DHCP server: a pool (first, last; by default the upper half of the
    /// interface's subnet) and an optional gateway.
    Full {
        /// The pool, when given.
        range: Option<(Ipv4Addr, Ipv4Addr)>,
        /// Default gateway handed out.
        router: Option<Ipv4Addr>,
    },
    /// Another server hands out addresses; Ferric answers network-boot clients only.
    Proxy,
}

/// Settings of the boot services.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// The provisioning interface (its first IPv4 address is the boot server).
    pub iface: String,
    /// Full DHCP or proxy.
    pub dhcp: DhcpMode,
    /// Answer MACs of no enrolled node.
    pub discovery: bool,
    /// How discovery is bounded.
    pub discovery_limits: crate::conductor::network_boot::DiscoveryLimits,
    /// The DHCP server's rate limits, quarantine and share of the pool for unknown MACs.
    pub dhcp_limits: ferric_netboot::dhcp::Limits,
    /// Limits of the TFTP server.
    pub tftp_limits: ferric_netboot::tftp::Limits,
    /// DHCP server port (67).
    pub dhcp_port: u16,
    /// TFTP port (69).
    pub tftp_port: u16,
    /// Boot HTTP port on the interface's address.
    pub http_port: u16,
    /// Directory with the ramdisk's `vmlinuz` and `initramfs` (`ferric-ramdisk build`).
    pub ramdisk_dir: PathBuf,
    /// Directory with iPXE's `undionly.kpxe`, `snponly.efi` and `ipxe.efi` (Debian's `ipxe`).
    pub ipxe_dir: PathBuf,
    /// Kernel arguments beside Ferric's (consoles).
    pub kernel_args: String,
    /// How long a boot Ferric started waits for its script to be fetched and its ramdisk to
    /// enroll (the network boot's time and the call back's).
    pub boot_ttl: Duration,
}

impl BootConfig {
    /// Defaults for an interface.
    pub fn new(iface: &str, ramdisk_dir: PathBuf) -> BootConfig {
        BootConfig {
            iface: iface.to_owned(),
            dhcp: DhcpMode::Full {
                range: None,
                router: None,
            },
            discovery: false,
            discovery_limits: Default::default(),
            dhcp_limits: Default::default(),
            tftp_limits: Default::default(),
            dhcp_port: 67,
            tftp_port: 69,
            http_port: 8080,
            ramdisk_dir,
            ipxe_dir: PathBuf::from("/usr/lib/ipxe"),
            kernel_args: "console=tty0 console=ttyS0,115200".into(),
            boot_ttl: Duration::from_secs(8 * 60),
        }
    }
}

/// Why the boot services did not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The interface has no IPv4 address.
    #[error("interface `{0}` has no IPv4 address for the boot services")]
    NoAddress(String),
    /// A socket could not be opened.
    #[error("cannot open the {what} socket on `{iface}`: {source}")]
    Socket {
        /// DHCP, TFTP or HTTP.
        what: &'static str,
        /// Interface.
        iface: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The pool does not fit the interface's subnet.
    #[error("{0}")]
    Pool(String),
}

/// The boot services, started.
#[derive(Debug)]
pub struct Running {
    /// The boot server's address.
    pub server: Ipv4Addr,
    /// The boot HTTP server's bound address.
    pub http: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The first IPv4 address of `iface` with its prefix length.
pub fn interface_ipv4(iface: &str) -> Option<(Ipv4Addr, u8)> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != iface {
            return None;
        }
        let ip = a.address?.as_sockaddr_in()?.ip();
        let mask = a.netmask?.as_sockaddr_in()?.ip();
        Some((ip, u32::from(mask).leading_ones() as u8))
    })
}

/// The default pool: the upper half of the subnet, without its broadcast address.
fn default_pool(ip: Ipv4Addr, prefix: u8) -> Result<(Ipv4Addr, Ipv4Addr), BootError> {
    if !(8..=29).contains(&prefix) {
        return Err(BootError::Pool(format!(
            "a /{prefix} network leaves no pool: give --dhcp-range FIRST-LAST"
        )));
    }
    let size = 1u32 << (32 - prefix);
    let net = u32::from(ip) & !(size - 1);
    Ok((
        Ipv4Addr::from(net + size / 2),
        Ipv4Addr::from(net + size - 2),
    ))
}

/// Starts DHCP, TFTP and HTTP on the interface; `link_port` is where ramdisks dial the link.
pub async fn start(
    shared: Arc<Shared>,
    cfg: BootConfig,
    link_port: u16,
) -> Result<Running, BootError> {
    let (server, prefix) =
        interface_ipv4(&cfg.iface).ok_or_else(|| BootError::NoAddress(cfg.iface.clone()))?;
    let sock = |what, e| BootError::Socket {
        what,
        iface: cfg.iface.clone(),
        source: e,
    };
    let mode = match &cfg.dhcp {
        DhcpMode::Proxy => Mode::Proxy,
        DhcpMode::Full { range, router } => {
            let (first, last) = match range {
                Some(r) => *r,
                None => default_pool(server, prefix)?,
            };
            Mode::Full {
                first,
                last,
                netmask: Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix))),
                router: *router,
                lease: Duration::from_secs(3600),
            }
        }
    };
    let http_listener = tokio::net::TcpListener::bind((server, cfg.http_port))
        .await
        .map_err(|e| sock("HTTP", e))?;
    let http = http_listener.local_addr().map_err(|e| sock("HTTP", e))?;
    let dhcp_sock =
        ferric_netboot::udp_on_interface(&cfg.iface, cfg.dhcp_port).map_err(|e| sock("DHCP", e))?;
    let tftp_sock = tokio::net::UdpSocket::bind((server, cfg.tftp_port))
        .await
        .map_err(|e| sock("TFTP", e))?;
    let mut dhcp_cfg = DhcpConfig::new(server, http.port(), mode, cfg.discovery);
    dhcp_cfg.limits = cfg.dhcp_limits.clone();
    let mut dhcp = Dhcp::new(dhcp_cfg);
    restore_leases(&shared, &mut dhcp).await;
    let dhcp = Arc::new(Mutex::new(dhcp));
    let site = BootSite {
        http_base: format!("http://{http}"),
        link: format!("{server}:{link_port}"),
        kernel_args: cfg.kernel_args.clone(),
        discovery: cfg.discovery.then(|| cfg.discovery_limits.clone()),
        dhcp: Arc::new(DhcpView(dhcp.clone())),
        discovered: Arc::new(Mutex::new((
            f64::from(cfg.discovery_limits.per_minute),
            Instant::now(),
        ))),
        boot_ttl: cfg.boot_ttl,
    };
    // Read once, here: a transfer then holds no file descriptor. A file that is missing is
    // answered "no file" when asked for.
    let (files, missing) = ferric_netboot::tftp::Files::load(
        ["undionly.kpxe"]
            .into_iter()
            .chain(ferric_netboot::dhcp::EFI_LOADERS)
            .map(|f| (f.to_owned(), cfg.ipxe_dir.join(f))),
    );
    for e in missing {
        tracing::warn!(error = %e, "TFTP will not serve this file");
    }
    let tftp = ferric_netboot::tftp::Server::new(files, cfg.tftp_limits.clone());
    let shutdown = shared.shutdown.clone();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(serve_dhcp(shared.clone(), dhcp_sock, dhcp)));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = ferric_netboot::tftp::serve(tftp_sock, tftp).await {
            tracing::error!(error = %e, "TFTP server stopped");
        }
    }));
    let _ = shared.boot_site.set(site.clone());
    let app = router(shared.clone(), site, cfg.clone());
    // The other half of the open files, 16 connections from one machine (iPXE and a
    // ramdisk take one or two).
    let gate = crate::http::Gate::new(
        "boot HTTP",
        crate::http::Limits::for_open_files(shared.open_files, 2, 1024, 16),
    );
    let header_timeout = gate.limits().header_timeout;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tasks.push(tokio::spawn(crate::http::accept_tcp(
        http_listener,
        gate,
        shutdown.clone(),
        tx,
    )));
    let grace = shared.config.drain_grace;
    tasks.push(tokio::spawn(crate::http::serve(
        rx,
        app,
        header_timeout,
        shutdown,
        grace,
    )));
    tracing::info!(iface = %cfg.iface, %server, %http, mode = ?cfg.dhcp, "boot services listening");
    Ok(Running {
        server,
        http,
        tasks,
    })
}

/// The DHCP server's addresses, as the conductor asks for them.
#[derive(Debug)]
struct DhcpView(Arc<Mutex<Dhcp>>);

impl crate::conductor::network_boot::DhcpAddresses for DhcpView {
    fn address_of(&self, mac: &str) -> Option<std::net::IpAddr> {
        let mac = parse_mac(mac)?;
        crate::lock(&self.0)
            .address_of(&mac)
            .map(std::net::IpAddr::V4)
    }
}

/// The leases stored before (as the DHCP server takes them: time left from now).
async fn restore_leases(shared: &Shared, dhcp: &mut Dhcp) {
    use ferric_netboot::dhcp::{LeaseKind, LeaseRecord};
    let now_ms = crate::now_ms();
    let rows = match shared.store.leases(now_ms).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %crate::error_chain(&e), "stored DHCP leases not read: addresses in use may be offered again");
            return;
        }
    };
    let records: Vec<LeaseRecord> = rows
        .iter()
        .filter_map(|r| {
            Some(LeaseRecord {
                mac: parse_mac(&r.mac)?,
                ip: r.ip.parse().ok()?,
                remaining: Duration::from_millis(u64::try_from(r.expires_at_ms - now_ms).ok()?),
                kind: match r.kind.as_str() {
                    "offered" => LeaseKind::Offered,
                    "bound" => LeaseKind::Bound,
                    "quarantined" => LeaseKind::Quarantined,
                    _ => return None,
                },
            })
        })
        .collect();
    if !records.is_empty() {
        tracing::info!(leases = records.len(), "DHCP leases restored");
    }
    dhcp.restore(records, Instant::now());
}

/// Stores the DHCP server's leases when they changed since the last time.
async fn save_leases(shared: &Shared, dhcp: &Mutex<Dhcp>) {
    use ferric_netboot::dhcp::{LeaseKind, mac_string};
    let rows: Vec<crate::store::LeaseRow> = {
        let mut d = crate::lock(dhcp);
        if !d.take_changed() {
            return;
        }
        let now_ms = crate::now_ms();
        d.leases(Instant::now())
            .into_iter()
            .map(|l| crate::store::LeaseRow {
                ip: l.ip.to_string(),
                mac: mac_string(&l.mac),
                kind: match l.kind {
                    LeaseKind::Offered => "offered",
                    LeaseKind::Bound => "bound",
                    LeaseKind::Quarantined => "quarantined",
                }
                .to_owned(),
                expires_at_ms: now_ms + l.remaining.as_millis() as i64,
            })
            .collect()
    };
    if let Err(e) = shared.store.save_leases(&rows).await {
        tracing::warn!(error = %crate::error_chain(&e), "DHCP leases not stored");
    }
}

/// The DHCP loop: known MACs refreshed from the store every two seconds, leases stored each
/// second when they changed.
async fn serve_dhcp(shared: Arc<Shared>, sock: tokio::net::UdpSocket, dhcp: Arc<Mutex<Dhcp>>) {
    let mut buf = vec![0u8; 1500];
    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    let mut persist = tokio::time::interval(Duration::from_secs(1));
    persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = persist.tick() => save_leases(&shared, &dhcp).await,
            _ = refresh.tick() => {
                match crate::conductor::network_boot::known_macs(&shared).await {
                    Ok(known) => {
                        let known: Vec<_> = known
                            .into_iter()
                            .filter_map(|(m, n)| parse_mac(&m).map(|m| (m, n, None)))
                            .collect();
                        crate::lock(&dhcp).set_known(known);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the enrolled MACs"),
                }
                match crate::conductor::network_boot::ipxe_efi_macs(&shared).await {
                    Ok(macs) => crate::lock(&dhcp)
                        .set_ipxe_efi(macs.iter().filter_map(|m| parse_mac(m))),
                    Err(e) => tracing::warn!(error = %e, "cannot read the nodes' UEFI loaders"),
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let SocketAddr::V4(from) = from else { continue };
                let (reply, node) = {
                    let mut d = crate::lock(&dhcp);
                    let reply = d.handle(&buf[..n], from, Instant::now());
                    let node = reply.as_ref().and_then(|r| {
                        let booting = r.message.fname().is_some_and(|f| f.iter().any(|b| *b != 0));
                        let mac: [u8; 6] = r.message.chaddr().get(..6)?.try_into().ok()?;
                        booting.then(|| d.node_of(&mac).map(str::to_owned)).flatten()
                    });
                    (reply, node)
                };
                if let Some(node) = node {
                    shared.hub.boot_stages.mark(&node, crate::model::BootStage::Dhcp, crate::now_ms());
                }
                if let Some(reply) = reply {
                    tracing::debug!(to = %reply.to, kind = ?reply.message.opts().msg_type(), "DHCP answer");
                    let to = if *reply.to.ip() == Ipv4Addr::BROADCAST {
                        SocketAddrV4::new(Ipv4Addr::BROADCAST, reply.to.port())
                    } else {
                        reply.to
                    };
                    if let Err(e) = sock.send_to(&reply.bytes, to).await {
                        tracing::warn!(%to, error = %e, "cannot send a DHCP answer");
                    }
                }
            }
            _ = shared.shutdown.cancelled() => {
                save_leases(&shared, &dhcp).await;
                return;
            }
        }
    }
}

#[derive(Clone)]
struct Site {
    shared: Arc<Shared>,
    site: BootSite,
    cfg: BootConfig,
}

fn router(shared: Arc<Shared>, site: BootSite, cfg: BootConfig) -> Router {
    Router::new()
        .route("/boot/node/{file}", get(script))
        .route("/boot/ramdisk/{file}", get(ramdisk))
        .route("/boot/media/{file}", get(media))
        .route("/boot/{file}", get(ipxe))
        .route(
            "/images/sha256/{hex}",
            get(
                |State(s): State<Site>, Path(hex): Path<String>, req: Request| async move {
                    match crate::blobs::serve(&s.shared.images, &hex, req).await {
                        Ok(resp) => resp,
                        Err(e @ crate::blobs::BlobError::Unknown) => {
                            (StatusCode::NOT_FOUND, e.to_string()).into_response()
                        }
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                },
            ),
        )
        .with_state(Site { shared, site, cfg })
}

async fn script(
    State(s): State<Site>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
) -> Response {
    let Some(mac) = file
        .strip_suffix(".ipxe")
        .filter(|m| parse_mac(m).is_some())
    else {
        return (StatusCode::NOT_FOUND, "no such script").into_response();
    };
    let from = peer.ip().to_canonical();
    match crate::conductor::network_boot::script(&s.shared, &s.site, mac, from).await {
        Ok(text) => text.into_response(),
        Err(e) => {
            tracing::warn!(%mac, %from, error = %e, "no boot script");
            refusal(&e)
        }
    }
}

/// What the provisioning network is told of a refused script or ISO: which rule, not whose
/// node.
fn refusal(e: &crate::conductor::network_boot::ScriptRefusal) -> Response {
    use crate::conductor::network_boot::ScriptRefusal as R;
    let (status, say) = match e {
        R::UnknownMac(_) => (StatusCode::NOT_FOUND, "no node has this MAC"),
        R::NotBooting { .. } => (
            StatusCode::NOT_FOUND,
            "no network boot Ferric started is under way for this MAC",
        ),
        R::NoAddress(_) | R::WrongAddress { .. } => (
            StatusCode::FORBIDDEN,
            "the script goes only to the address DHCP gave this MAC",
        ),
        R::Enrolled(_) => (StatusCode::GONE, "this boot's ramdisk has enrolled already"),
        R::DiscoveryLimit(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "discovery is at its limit; try later",
        ),
        R::Conductor(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the coordinator failed; try again",
        ),
    };
    (status, format!("{say}\n")).into_response()
}

/// `GET /boot/media/NODE.iso`: the ramdisk as a bootable ISO for the node's BMC to insert as
/// virtual media, made for its running boot (kept while the command line is the same: the
/// BMC may fetch it more than once).
async fn media(State(s): State<Site>, Path(file): Path<String>, req: Request) -> Response {
    let Some(node) = file
        .strip_suffix(".iso")
        .filter(|n| crate::model::check_node_name(n).is_ok())
        .map(str::to_owned)
    else {
        return (StatusCode::NOT_FOUND, "no such image").into_response();
    };
    let cmdline =
        match crate::conductor::network_boot::media_cmdline(&s.shared, &s.site, &node).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%node, error = %e, "no virtual-media ISO");
                return refusal(&e);
            }
        };
    let dir = s.shared.config.data_dir.join("media");
    let (iso, line) = (dir.join(&file), dir.join(format!("{node}.cmdline")));
    if std::fs::read_to_string(&line).ok().as_deref() != Some(cmdline.as_str()) || !iso.exists() {
        let (ramdisk, work) = (s.cfg.ramdisk_dir.clone(), dir.join(format!("{node}.work")));
        let (iso2, c2) = (iso.clone(), cmdline.clone());
        let built = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            crate::media::build_iso(&ramdisk, &c2, &work, &iso2).map_err(|e| e.to_string())?;
            std::fs::write(&line, &c2).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = built {
            tracing::error!(%node, error = %e, "cannot make the virtual-media ISO");
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
        }
        tracing::info!(%node, iso = %iso.display(), "virtual-media ISO made");
    }
    serve_file(iso, req).await
}

async fn ramdisk(State(s): State<Site>, Path(file): Path<String>, req: Request) -> Response {
    let stage = match file.as_str() {
        "vmlinuz" => crate::model::BootStage::Kernel,
        "initramfs" => crate::model::BootStage::Initramfs,
        _ => return (StatusCode::NOT_FOUND, "no such ramdisk file").into_response(),
    };
    // The script names the node in the URL, so that the boot's progress shows on it.
    if let Some(node) = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("node=")))
        && crate::model::check_node_name(node).is_ok()
    {
        s.shared.hub.boot_stages.mark(node, stage, crate::now_ms());
    }
    serve_file(s.cfg.ramdisk_dir.join(file), req).await
}

async fn ipxe(State(s): State<Site>, Path(file): Path<String>, req: Request) -> Response {
    if file != "undionly.kpxe" && !ferric_netboot::dhcp::EFI_LOADERS.contains(&file.as_str()) {
        return (StatusCode::NOT_FOUND, "no such boot file").into_response();
    }
    serve_file(s.cfg.ipxe_dir.join(file), req).await
}

async fn serve_file(path: PathBuf, req: Request) -> Response {
    use tower::ServiceExt;
    if !path.exists() {
        return (
            StatusCode::NOT_FOUND,
            format!("{} is missing on the boot server", path.display()),
        )
            .into_response();
    }
    match tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
    {
        Ok(r) => r.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pool_is_the_upper_half_of_the_subnet() {
        assert_eq!(
            default_pool(Ipv4Addr::new(10, 248, 3, 1), 24).unwrap(),
            (
                Ipv4Addr::new(10, 248, 3, 128),
                Ipv4Addr::new(10, 248, 3, 254)
            )
        );
        assert!(default_pool(Ipv4Addr::new(10, 0, 0, 1), 31).is_err());
    }
}
