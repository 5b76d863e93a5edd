//! DHCP datagrams from anyone on the provisioning network, against one server kept across
//! inputs (its clock advancing), so that bugs of state show: each input is a sequence of
//! records, raw datagrams or datagrams built from a few choices (MACs, message types, server
//! identifier, addresses), time steps and restarts through `leases`/`restore`. After every
//! datagram the leases must be sound: no address held twice, no MAC holding two, all within
//! the pool, quarantines and the share of unknown MACs within their caps, answers decoding
//! again; after every input each known MAC must still obtain an address.
#![no_main]
use dhcproto::v4::MessageType;
use ferric_netboot::dhcp::{Config, Dhcp, LeaseKind, Mac, Mode, decode};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const FIRST: u8 = 10;
const LAST: u8 = 29;
const POOL: usize = (LAST - FIRST + 1) as usize;
const KNOWN: [Mac; 3] = [
    [0x52, 0x54, 0, 0, 0, 1],
    [0x52, 0x54, 0, 0, 0, 2],
    [0x52, 0x54, 0, 0, 0, 3],
];
/// The third known MAC has this address reserved.
const RESERVED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, LAST);

fn config() -> Config {
    let mut c = Config::new(
        SERVER,
        8080,
        Mode::Full {
            first: Ipv4Addr::new(10, 0, 0, FIRST),
            last: Ipv4Addr::new(10, 0, 0, LAST),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            router: None,
            lease: Duration::from_secs(300),
        },
        true,
    );
    c.limits.quarantine = Duration::from_secs(120);
    c
}

fn known() -> Vec<(Mac, String, Option<Ipv4Addr>)> {
    vec![
        (KNOWN[0], "k0".to_owned(), None),
        (KNOWN[1], "k1".to_owned(), None),
        (KNOWN[2], "k2".to_owned(), Some(RESERVED)),
    ]
}

fn server() -> Dhcp {
    let mut d = Dhcp::new(config());
    d.set_known(known());
    d
}

struct State {
    d: Dhcp,
    base: Instant,
    elapsed: Duration,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn mac(i: u8) -> Mac {
    match KNOWN.get(usize::from(i % 8)) {
        Some(m) => *m,
        None => [2, 0, 0, 0, 0, i % 8],
    }
}

fn pool_ip(i: u8) -> Ipv4Addr {
    // A few addresses outside the pool too.
    Ipv4Addr::new(10, 0, 0, FIRST - 2 + i % (POOL as u8 + 4))
}

/// A BOOTREQUEST from `chaddr` of message type `t` with the options chosen by `flags`.
fn build(chaddr: Mac, t: u8, flags: u8, ip: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    if flags & 8 != 0 {
        b[12..16].copy_from_slice(&ip.octets());
    }
    b[28..34].copy_from_slice(&chaddr);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, t]);
    if flags & 1 != 0 {
        let sid = if flags & 2 != 0 {
            SERVER
        } else {
            Ipv4Addr::new(10, 0, 0, 2)
        };
        b.extend_from_slice(&[54, 4]);
        b.extend_from_slice(&sid.octets());
    }
    if flags & 4 != 0 {
        b.extend_from_slice(&[50, 4]);
        b.extend_from_slice(&ip.octets());
    }
    if flags & 16 != 0 {
        b.extend_from_slice(&[60, 9]);
        b.extend_from_slice(b"PXEClient");
    }
    if flags & 32 != 0 {
        b.extend_from_slice(&[77, 4]);
        b.extend_from_slice(b"iPXE");
    }
    b.push(255);
    b
}

fn in_pool(ip: Ipv4Addr) -> bool {
    (FIRST..=LAST).contains(&ip.octets()[3]) && ip.octets()[..3] == [10, 0, 0]
}

/// What must hold of the server's state at `now`.
fn check(d: &Dhcp, now: Instant) {
    let records = d.leases(now);
    let mut ips = HashSet::new();
    let mut holders = HashSet::new();
    let mut quarantines: HashMap<Mac, usize> = HashMap::new();
    let mut unknown = 0;
    for r in &records {
        assert!(ips.insert(r.ip), "{} held twice: {records:?}", r.ip);
        assert!(in_pool(r.ip), "{} outside the pool", r.ip);
        match r.kind {
            LeaseKind::Quarantined => *quarantines.entry(r.mac).or_default() += 1,
            LeaseKind::Offered | LeaseKind::Bound => {
                assert!(holders.insert(r.mac), "a MAC with two leases: {records:?}");
                assert_eq!(d.lease_of(&r.mac), Some(r.ip));
                if !KNOWN.contains(&r.mac) {
                    unknown += 1;
                }
                if r.ip == RESERVED {
                    assert_eq!(r.mac, KNOWN[2], "the reserved address given to another");
                }
            }
        }
    }
    assert!(records.len() <= POOL);
    assert!(quarantines.values().sum::<usize>() <= (POOL / 8).max(1));
    assert!(quarantines.values().all(|n| *n <= 2));
    assert!(unknown <= POOL / 2, "unknown MACs hold {unknown}");
}

fn handle(d: &mut Dhcp, bytes: &[u8], from: SocketAddrV4, now: Instant) {
    let Some(r) = d.handle(bytes, from, now) else {
        return;
    };
    // What is sent decodes again.
    let m = decode(&r.bytes).expect("an answer that decodes");
    let Ok(chaddr) = <Mac>::try_from(&m.chaddr()[..6]) else {
        panic!("short chaddr");
    };
    let yiaddr = m.yiaddr();
    if !yiaddr.is_unspecified() {
        // An address is given only as the MAC's lease.
        assert_eq!(d.lease_of(&chaddr), Some(yiaddr));
    }
    if m.opts().msg_type() == Some(MessageType::Ack) && !yiaddr.is_unspecified() {
        assert_eq!(d.address_of(&chaddr), Some(yiaddr));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let st = guard.get_or_insert_with(|| State {
        d: server(),
        base: Instant::now(),
        elapsed: Duration::ZERO,
    });
    let mut rest = data;
    while let [op, step, src, a, b, c, tail @ ..] = rest {
        rest = tail;
        st.elapsed += if step & 0x80 != 0 {
            Duration::from_secs(u64::from(step & 0x7f) * 5)
        } else {
            Duration::from_millis(u64::from(*step) * 50)
        };
        let now = st.base + st.elapsed;
        let from = match src % 4 {
            0 => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            1 => SocketAddrV4::new(pool_ip(*src / 4), 4011),
            _ => SocketAddrV4::new(pool_ip(*src / 4), 68),
        };
        let ip = pool_ip(*src / 4);
        match op % 8 {
            0 => {
                let len = usize::from(*a) * 4;
                let (bytes, tail) = rest.split_at(len.min(rest.len()));
                rest = tail;
                handle(&mut st.d, bytes, from, now);
            }
            1..=5 => {
                let bytes = build(mac(*a), 1 + b % 8, *c, ip);
                handle(&mut st.d, &bytes, from, now);
            }
            // A restart (now and then): what was stored is restored.
            6 if op / 8 == 0 => {
                let records = st.d.leases(now);
                let mut again = server();
                again.restore(records.iter().copied(), now);
                assert_eq!(again.leases(now), records, "restore lost something");
                st.d = again;
            }
            _ => {}
        }
        check(&st.d, now);
    }
    // Every known MAC can still obtain an address (once the rate limits have refilled).
    let now = st.base + st.elapsed + Duration::from_secs(10);
    let mut probe = st.d.clone();
    for (i, k) in KNOWN.iter().enumerate() {
        let r = probe
            .handle(
                &discover(*k),
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                now,
            )
            .unwrap_or_else(|| panic!("no offer for known MAC {i}: {:?}", st.d.leases(now)));
        let ip = r.message.yiaddr();
        assert!(in_pool(ip));
        if i == 2 {
            assert_eq!(ip, RESERVED);
        }
    }
    check(&probe, now);
    // And no address is lost: newly enrolled MACs obtain every one not listed.
    let held: HashSet<Ipv4Addr> = probe
        .leases(now)
        .iter()
        .map(|r| r.ip)
        .chain([RESERVED])
        .collect();
    let fresh: Vec<Mac> = (0..POOL as u8).map(|i| [6, 0, 0, 0, 0, i]).collect();
    probe.set_known(
        known()
            .into_iter()
            .chain(fresh.iter().map(|m| (*m, "fresh".to_owned(), None))),
    );
    let mut got = HashSet::new();
    for m in &fresh {
        if let Some(r) = probe.handle(
            &discover(*m),
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            now,
        ) {
            let ip = r.message.yiaddr();
            assert!(!held.contains(&ip) && got.insert(ip), "{ip} given twice");
        }
    }
    assert_eq!(
        got.len() + held.len(),
        POOL,
        "addresses lost: {held:?} held"
    );
});

fn discover(mac: Mac) -> Vec<u8> {
    build(mac, 1, 0, Ipv4Addr::UNSPECIFIED)
}
