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
