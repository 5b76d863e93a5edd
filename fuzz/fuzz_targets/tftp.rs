//! TFTP packets from anyone on the provisioning network. Each input is decoded (never a
//! panic, and what decodes encodes back to the same packet), then played as a sequence of
//! records against one server kept across inputs, its clock advancing: requests, ACKs,
//! ERRORs and raw bytes from a few clients, and time steps. Each datagram in causes at most
//! one packet out, and none for a stale or duplicate ACK (RFC 1123's fix); every packet out
//! decodes; open transfers stay within the limits and their deadline.
#![no_main]
use ferric_netboot::tftp::{Files, Limits, Packet, Port, Server, TransferId};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn limits() -> Limits {
    Limits {
        transfers: 5,
        per_client: 2,
        retries: 3,
        deadline: Duration::from_secs(20),
    }
}

struct State {
    s: Server,
    base: Instant,
    elapsed: Duration,
    /// The block number of each transfer's last packet out.
    last: HashMap<TransferId, u16>,
    /// When each transfer started.
    born: HashMap<TransferId, Instant>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn server() -> Server {
    let mut files = Files::new();
    files.insert("a", Vec::new());
    files.insert("b", vec![7u8; 700]);
    files.insert("c", vec![9u8; 1024]);
    Server::new(files, limits())
}

fn clients() -> [IpAddr; 3] {
    [1, 2, 3].map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
}

/// Takes what the server sends after one input at `now` (at most `most` packets), checking
/// each and the limits.
fn drain(st: &mut State, now: Instant, most: usize) {
    let mut n = 0;
    while let Some(t) = st.s.poll_transmit() {
        n += 1;
        let p = Packet::decode(&t.bytes).expect("a packet out that decodes");
        if let Port::Transfer(id) = t.from {
            st.born.entry(id).or_insert(now);
            match p {
                Packet::Data { block, .. } => {
                    st.last.insert(id, block);
                }
                Packet::OptionAck { .. } => {
                    st.last.insert(id, 0);
                }
                Packet::Error { .. } => {}
                other => panic!("a transfer sent {other:?}"),
            }
        } else {
            assert!(
                matches!(p, Packet::Error { .. }),
                "the server port sent {p:?}"
            );
        }
    }
    assert!(n <= most, "{n} packets out for {most} allowed");
    while let Some(id) = st.s.poll_ended() {
        st.last.remove(&id);
        st.born.remove(&id);
        assert!(!st.s.transfer_ids().any(|i| i == id));
    }
    let l = st.s.limits().clone();
    assert!(st.s.transfers() <= l.transfers);
    for ip in clients() {
        assert!(st.s.transfers_from(ip) <= l.per_client);
    }
    // No transfer outlives its deadline.
    for id in st.s.transfer_ids() {
        let age = now - st.born[&id];
        assert!(age < l.deadline, "{id:?} open for {age:?}");
    }
}

/// How many packets a datagram into transfer `id` may cause: none for a stale or duplicate
/// acknowledgement or an error, else one.
fn allowed(st: &State, id: TransferId, bytes: &[u8]) -> usize {
    match Packet::decode(bytes) {
        Ok(Packet::Ack { block }) if Some(&block) == st.last.get(&id) => 1,
        Ok(Packet::Ack { .. } | Packet::Error { .. }) => 0,
        _ => 1,
    }
}

fn rrq(file: u8, opts: u8, a: u8, b: u8) -> Vec<u8> {
    let mut options = Vec::new();
    if opts & 1 != 0 {
        options.push(("blksize".to_owned(), (u16::from(a) * 8).to_string()));
    }
    if opts & 2 != 0 {
        options.push(("tsize".to_owned(), "0".to_owned()));
    }
    if opts & 4 != 0 {
        options.push(("timeout".to_owned(), b.to_string()));
    }
    let mode = match opts >> 6 {
        0 | 1 => "octet",
        2 => "netascii",
        _ => "mail",
    };
    Packet::Read {
        file: ["a", "b", "/c", "missing"][usize::from(file % 4)].to_owned(),
        mode: mode.to_owned(),
        options,
    }
    .encode()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
    }
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let st = guard.get_or_insert_with(|| State {
        s: server(),
        base: Instant::now(),
        elapsed: Duration::ZERO,
        last: HashMap::new(),
        born: HashMap::new(),
    });
    let mut rest = data;
    while let [op, step, who, a, b, c, tail @ ..] = rest {
        rest = tail;
        st.elapsed += Duration::from_millis(u64::from(*step) * 40);
        let now = st.base + st.elapsed;
        if st.s.poll_timeout().is_some_and(|t| t <= now) {
            let open = st.s.transfers();
            st.s.handle_timeout(now);
            drain(st, now, open);
        }
        let peer = SocketAddr::new(
            clients()[usize::from(who % 3)],
            1000 + u16::from(who / 3 % 3),
        );
        let ids: Vec<TransferId> = st.s.transfer_ids().collect();
        let target = (!ids.is_empty()).then(|| ids[usize::from(*a) % ids.len()]);
        let datagram = match (op % 6, target) {
            (0, _) => {
                let len = usize::from(*a);
                let (bytes, tail) = rest.split_at(len.min(rest.len()));
                rest = tail;
                st.s.handle_request(now, peer, bytes);
                None
            }
            (1, _) => {
                st.s.handle_request(now, peer, &rrq(*a, *b, *c, *a ^ *c));
                None
            }
            (2, Some(id)) => {
                let last = st.last.get(&id).copied().unwrap_or(0);
                let block = match b % 4 {
                    0 => last,
                    1 => last.wrapping_sub(1),
                    2 => last.wrapping_add(1),
                    _ => u16::from_be_bytes([*b, *c]),
                };
                Some((id, Packet::Ack { block }.encode()))
            }
            (3, Some(id)) => Some((
                id,
                Packet::Error {
                    code: u16::from(*b),
                    message: String::new(),
                }
                .encode(),
            )),
            (4, Some(id)) => {
                let len = usize::from(*b);
                let (bytes, tail) = rest.split_at(len.min(rest.len()));
                rest = tail;
                Some((id, bytes.to_vec()))
            }
            _ => None,
        };
        let most = match datagram {
            Some((id, bytes)) => {
                let most = allowed(st, id, &bytes);
                st.s.handle_datagram(now, id, &bytes);
                most
            }
            None => 1,
        };
        drain(st, now, most);
    }
});
