//! `ferric-dhcp-burst IFACE COUNT SECS`: broadcasts COUNT DHCP DISCOVERs from as many PXE ROMs
//! (MACs 02:00:00:00:HI:LO) on IFACE at once, then prints `offer MAC ADDRESS` for every OFFER
//! that answers one of them within SECS seconds — what a rack powered on at once does.

use anyhow::{Context, Result, bail};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, iface, count, secs] = args.as_slice() else {
        bail!("usage: ferric-dhcp-burst IFACE COUNT SECS");
    };
    let count: u16 = count.parse().context("COUNT")?;
    let limit = Duration::from_secs(secs.parse().context("SECS")?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let sock = ferric_netboot::udp_on_interface(iface, 68)?;
        let mut want = HashMap::new();
        for i in 0..count {
            let mac = [2, 0, 0, 0, (i >> 8) as u8, i as u8];
            let xid = 0x4600_0000 | u32::from(i);
            let mut m = Message::default();
            m.set_opcode(Opcode::BootRequest)
                .set_xid(xid)
                .set_chaddr(&mac)
                .set_flags(Flags::default().set_broadcast());
            m.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Discover));
            m.opts_mut().insert(DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
            ));
            let mut b = Vec::new();
            m.encode(&mut Encoder::new(&mut b))?;
            sock.send_to(&b, "255.255.255.255:67").await?;
            want.insert(xid, mac);
        }
        let started = Instant::now();
        let mut buf = vec![0u8; 1500];
        while !want.is_empty() && started.elapsed() < limit {
            let left = limit.saturating_sub(started.elapsed());
            let Ok(r) = tokio::time::timeout(left, sock.recv_from(&mut buf)).await else {
                break;
            };
            let (n, _) = r?;
            let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            if m.opts().msg_type() != Some(MessageType::Offer) {
                continue;
            }
            if let Some(mac) = want.remove(&m.xid()) {
                let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                println!("offer {} {}", mac.join(":"), m.yiaddr());
            }
        }
        println!("unanswered {}", want.len());
        Ok(())
    })
}
