//! A machine on the provisioning network, as the boot services see it, without a machine:
//! its DHCP request (sent to the coordinator's DHCP port on loopback), its script fetched
//! from the address DHCP gave it, its ramdisk's enrollment from there. On `lo` every address
//! of 127.0.0.0/8 is local, so each test machine gets an address of its own and the boot
//! services' address checks are exercised on real sockets.

use anyhow::{Context, Result, bail};
use ferric_agent::enroll::{EnrollError, EnrollOptions, enroll};
use ferric_agent::tls::CaPin;
use ferric_proto::msg::Role;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A pretend machine: its MAC and the address it asks DHCP for.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The address it asks for (in the boot services' pool: `lo`'s default pool is the upper
    /// half of 127.0.0.0/8).
    pub ip: Ipv4Addr,
}

impl Machine {
    /// A machine with `mac` asking for `ip`.
    pub fn new(mac: &str, ip: Ipv4Addr) -> Machine {
        Machine {
            mac: mac.to_owned(),
            ip,
        }
    }

    fn mac_bytes(&self) -> Result<[u8; 6]> {
        ferric_netboot::dhcp::parse_mac(&self.mac).with_context(|| format!("MAC {}", self.mac))
    }

    /// Sends a DHCP REQUEST for its address (as a machine rebooting with the address it had)
    /// to the DHCP server at `dhcp` on loopback, whose own address is 127.0.0.1.
    pub fn dhcp_request(&self, dhcp: SocketAddr) -> Result<()> {
        let bytes = ferric_netboot::client::request(
            &self.mac_bytes()?,
            rand_xid(),
            dhcproto::v4::MessageType::Request,
            Some((self.ip, Ipv4Addr::LOCALHOST)),
        );
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sock.send_to(&bytes, dhcp)?;
        Ok(())
    }

    /// `GET /boot/node/<mac>.ipxe` from `from` (its own address when `None`).
    pub async fn fetch_script(
        &self,
        http: SocketAddr,
        from: Option<Ipv4Addr>,
    ) -> Result<(u16, String)> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = reqwest::Client::builder()
            .local_address(IpAddr::V4(from.unwrap_or(self.ip)))
            .timeout(Duration::from_secs(10))
            .build()?;
        let r = c
            .get(format!(
                "http://{http}/boot/node/{}.ipxe",
                self.mac.replace(':', "-")
            ))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// DHCP, then the script from its address: repeated until DHCP has the MAC (the boot
    /// services read the enrolled MACs every two seconds) and the answer is not "no address"
    /// (403). Returns the final status and body.
    pub async fn lease_and_fetch(
        &self,
        dhcp: SocketAddr,
        http: SocketAddr,
    ) -> Result<(u16, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            self.dhcp_request(dhcp)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (status, body) = self.fetch_script(http, None).await?;
            if status != 403 || std::time::Instant::now() > deadline {
                return Ok((status, body));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
}

/// A word `key…` of a script's kernel command line.
pub fn script_word(script: &str, key: &str) -> Result<String> {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(str::to_owned)
        .with_context(|| format!("no {key} in the script:\n{script}"))
}

/// `(token, ca)` of a script that was handed out (status 200).
pub fn token_and_ca(status: u16, script: &str) -> Result<(String, String)> {
    if status != 200 || !script.starts_with("#!ipxe\n") {
        bail!("no script ({status}): {script}");
    }
    Ok((
        script_word(script, "ferric.token=")?,
        script_word(script, "ferric.ca=")?,
    ))
}

/// A ramdisk's enrollment as `node` with `token`, from `from`, at the link `link`.
pub async fn ramdisk_enroll(
    link: SocketAddr,
    node: &str,
    token: &str,
    ca: &str,
    from: Ipv4Addr,
) -> std::result::Result<ferric_agent::tls::Identity, EnrollError> {
    enroll(&EnrollOptions {
        coordinator: link.to_string(),
        token: token.to_owned(),
        ca_pin: ca.parse::<CaPin>().map_err(EnrollError::Tls)?,
        node: node.to_owned(),
        role: Role::Ramdisk,
        timeout: Duration::from_secs(20),
        local: Some(IpAddr::V4(from)),
    })
    .await
}

fn rand_xid() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
}

/// A DHCP client speaking through a relay address of its own on loopback: requests carry
/// `giaddr`, so the server answers to `relay:67`, where this client listens (root only). Each
/// test uses its own relay address.
#[derive(Debug)]
pub struct RelayClient {
    sock: std::net::UdpSocket,
    relay: Ipv4Addr,
    server: SocketAddr,
}

impl RelayClient {
    /// A client at `relay` (127.0.0.0/8) for the DHCP server at `server`.
    pub fn new(relay: Ipv4Addr, server: SocketAddr) -> Result<RelayClient> {
        // Beside coordinators of other tests whose DHCP listens on port 67 of every address
        // (bound to their own interfaces): this address's port, shared as they share theirs.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&std::net::SocketAddr::from((relay, 67)).into())
            .with_context(|| format!("cannot listen on {relay}:67 (needs root)"))?;
        let sock: std::net::UdpSocket = s.into();
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(RelayClient {
            sock,
            relay,
            server,
        })
    }

    /// Sends a message of `kind` from `mac` with `opts`, `ciaddr` set when given, and waits
    /// for an answer (none within 300 ms: `None`).
    pub fn send(
        &self,
        mac: &str,
        kind: dhcproto::v4::MessageType,
        ciaddr: Option<Ipv4Addr>,
        opts: Vec<dhcproto::v4::DhcpOption>,
    ) -> Result<Option<dhcproto::v4::Message>> {
        use dhcproto::{Encodable, Encoder};
        let mac = ferric_netboot::dhcp::parse_mac(mac).with_context(|| format!("MAC {mac}"))?;
        let mut m = dhcproto::v4::Message::default();
        let xid = rand_xid();
        m.set_chaddr(&mac)
            .set_xid(xid)
            .set_giaddr(self.relay)
            .set_ciaddr(ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED));
        m.opts_mut()
            .insert(dhcproto::v4::DhcpOption::MessageType(kind));
        for o in opts {
            m.opts_mut().insert(o);
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out))?;
        // Drain what an earlier, unanswered request may still bring.
        self.sock.set_nonblocking(true)?;
        let mut buf = [0u8; 1500];
        while self.sock.recv(&mut buf).is_ok() {}
        self.sock.set_nonblocking(false)?;
        self.sock.send_to(&out, self.server)?;
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(r) = ferric_netboot::dhcp::decode(&buf[..n])
                        && r.xid() == xid
                    {
                        return Ok(Some(r));
                    }
                }
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// DISCOVER from `mac`: the address offered.
    pub fn discover(&self, mac: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .send(mac, dhcproto::v4::MessageType::Discover, None, vec![])?
            .filter(|m| m.opts().msg_type() == Some(dhcproto::v4::MessageType::Offer))
            .map(|m| m.yiaddr()))
    }

    /// REQUEST of `ip` from `mac`, naming the server at 127.0.0.1: whether it was acknowledged.
    pub fn request(&self, mac: &str, ip: Ipv4Addr) -> Result<bool> {
        use dhcproto::v4::{DhcpOption, MessageType};
        Ok(self
            .send(
                mac,
                MessageType::Request,
                None,
                vec![
                    DhcpOption::RequestedIpAddress(ip),
                    DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST),
                ],
            )?
            .is_some_and(|m| m.opts().msg_type() == Some(MessageType::Ack) && m.yiaddr() == ip))
    }

    /// DISCOVER then REQUEST: the address `mac` holds now.
    pub fn lease(&self, mac: &str) -> Result<Option<Ipv4Addr>> {
        let Some(ip) = self.discover(mac)? else {
            return Ok(None);
        };
        Ok(self.request(mac, ip)?.then_some(ip))
    }

    /// DECLINE of `ip` from `mac`, naming `server` (no answer is expected).
    pub fn decline(&self, mac: &str, ip: Ipv4Addr, server: Ipv4Addr) -> Result<()> {
        use dhcproto::v4::{DhcpOption, MessageType};
        self.send(
            mac,
            MessageType::Decline,
            None,
            vec![
                DhcpOption::RequestedIpAddress(ip),
                DhcpOption::ServerIdentifier(server),
            ],
        )?;
        Ok(())
    }
}

/// A RELEASE of `ip` for `mac`, sent from `from` (an honest one comes from `ip` itself) to
/// the DHCP server at `server`.
pub fn dhcp_release(server: SocketAddr, mac: &str, ip: Ipv4Addr, from: Ipv4Addr) -> Result<()> {
    use dhcproto::v4::{DhcpOption, MessageType};
    use dhcproto::{Encodable, Encoder};
    let mac = ferric_netboot::dhcp::parse_mac(mac).with_context(|| format!("MAC {mac}"))?;
    let mut m = dhcproto::v4::Message::default();
    m.set_chaddr(&mac).set_xid(rand_xid()).set_ciaddr(ip);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Release));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST));
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out))?;
    let sock = std::net::UdpSocket::bind((from, 0))?;
    sock.send_to(&out, server)?;
    Ok(())
}
