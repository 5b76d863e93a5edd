//! The hub's parts in use: BMC reads, telemetry, consoles.

use super::*;
use ferric_proto::msg::SensorReading;
use ferric_proto::msg::{BmcState, TelemetrySample};

fn read(at_ms: u64, sensors: usize, error: bool) -> BmcState {
    BmcState {
        name: "bm1".into(),
        at_ms,
        power_on: (!error).then_some(true),
        sensors: (0..sensors)
            .map(|i| SensorReading {
                name: format!("s{i}"),
                kind: "temperature".into(),
                value: Some(40.0),
                unit: "degrees C".into(),
            })
            .collect(),
        error: error.then(|| "bmc `bm1`: no answer".into()),
    }
}

#[test]
fn bmc_reads_keep_the_last_sensors_until_a_read_fails_and_older_reads_lose() {
    let hub = Hub::default();
    hub.bmc.record(read(10, 2, false), 100);
    hub.bmc.record(read(20, 0, false), 200);
    assert_eq!(hub.bmc.state("bm1").unwrap().sensors.len(), 2);
    assert_eq!(hub.bmc.state("bm1").unwrap().at_ms, 20);
    // A late datagram does not rewrite history, in the view or in the telemetry ring.
    hub.bmc.record(read(15, 3, false), 250);
    assert_eq!(hub.bmc.state("bm1").unwrap().at_ms, 20);
    let ring = hub.bmc.since("bm1", 0);
    assert_eq!(
        ring.iter().map(|r| r.bmc.at_ms).collect::<Vec<_>>(),
        [10, 20]
    );
    // The telemetry shows each read as it was: no sensors where none were read.
    assert_eq!(ring[1].bmc.sensors.len(), 0);
    assert_eq!(hub.bmc.since("bm1", 100).len(), 1);
    hub.bmc.record(read(30, 0, true), 300);
    assert!(hub.bmc.state("bm1").unwrap().sensors.is_empty());
    hub.bmc.forget("bm1");
    assert!(hub.bmc.state("bm1").is_none() && hub.bmc.since("bm1", 0).is_empty());
}

#[test]
fn records_of_the_same_millisecond_get_distinct_stamps_so_a_reader_misses_none() {
    let hub = Hub::default();
    hub.telemetry.record("n1", sample(1, 0), 500);
    let seen = hub.telemetry.since("n1", 0);
    // Arrives in the millisecond the reader last saw.
    hub.telemetry.record("n1", sample(2, 0), 500);
    let after = hub.telemetry.since("n1", seen[0].received_at_ms);
    assert_eq!(after.len(), 1, "the second sample of ms 500 is not lost");
    assert_eq!(after[0].received_at_ms, 501);
    hub.bmc.record(read(10, 0, false), 700);
    hub.bmc.record(read(11, 0, false), 700);
    let stamps: Vec<i64> = hub
        .bmc
        .since("bm1", 0)
        .iter()
        .map(|r| r.received_at_ms)
        .collect();
    assert_eq!(stamps, [700, 701]);
}

#[test]
fn a_per_boot_token_on_a_console_keeps_its_id_and_loses_its_secret() {
    assert_eq!(
        redact_boot_token("Kernel command line: ferric.token=b123456789.abcdef ferric.node=n0"),
        "Kernel command line: ferric.token=b123456789.… ferric.node=n0"
    );
    assert_eq!(redact_boot_token("x ferric.token=zzz"), "x ferric.token=…");
    assert_eq!(redact_boot_token("nothing here"), "nothing here");
    let hub = Hub::default();
    hub.consoles
        .record("n0", vec!["ferric.token=bq.s3cret".into()], None, 1);
    let tail = hub.consoles.since("n0", None, 10);
    assert!(!tail.lines[0].text.contains("s3cret"), "{:?}", tail.lines);
}

#[test]
fn console_lines_are_numbered_bounded_and_cut() {
    let hub = Hub::default();
    assert!(hub.consoles.since("bm1", None, 10).lines.is_empty());
    let many: Vec<String> = (0..CONSOLE_RING + 5).map(|i| format!("line {i}")).collect();
    hub.consoles.record("bm1", many, None, 1);
    let all = hub.consoles.since("bm1", None, usize::MAX);
    assert_eq!(all.lines.len(), CONSOLE_RING);
    assert_eq!(all.lines[0].text, "line 5");
    let last = all.lines.last().unwrap().seq;
    hub.consoles.record("bm1", vec!["x".repeat(5000)], None, 2);
    let new = hub.consoles.since("bm1", Some(last), 10);
    assert_eq!(new.lines.len(), 1);
    assert_eq!(new.lines[0].seq, last + 1);
    assert_eq!(new.lines[0].text.len(), ferric_proto::msg::CONSOLE_LINE_MAX);
    assert_eq!(
        hub.consoles.since("bm1", None, 3).lines.len(),
        3,
        "the newest 3"
    );
    // The error is what the agent said last (it says so when it changes), cut.
    hub.consoles
        .record("bm1", vec![], Some("x".repeat(5000)), 3);
    assert_eq!(
        hub.consoles.since("bm1", None, 1).error.unwrap().len(),
        1024
    );
    hub.consoles.record("bm1", vec![], None, 4);
    assert!(hub.consoles.since("bm1", None, 1).error.is_none());
    let epoch = hub.consoles.since("bm1", None, 1).epoch_ms;
    assert!(epoch > 0 && epoch == hub.consoles.since("bm9", None, 1).epoch_ms);
    hub.consoles.forget("bm1");
    assert!(hub.consoles.since("bm1", None, 10).lines.is_empty());
}

/// A sample whose guest list encodes to about `bytes`.
fn sample(seq: u64, bytes: usize) -> TelemetrySample {
    let guests = (0..bytes / 1024)
        .map(|i| ferric_proto::msg::GuestSample {
            name: format!("g{i}"),
            running: true,
            vcpus: 1,
            memory_mib: 512,
            cpu_percent: 0.0,
            mem_bytes: 0,
            block_rd_bytes: 0,
            block_wr_bytes: 0,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            missing_disks: vec!["x".repeat(990)],
            disk_sizes: vec![],
        })
        .collect();
    TelemetrySample {
        seq,
        at_ms: seq * 1000,
        cpu_percent: 1.0,
        cpus: 2,
        mem_used_bytes: 1,
        mem_total_bytes: 2,
        load1: 0.1,
        disks: vec![],
        nics: vec![],
        progress: None,
        guests,
    }
}

#[test]
fn telemetry_rings_are_bounded_in_bytes_and_a_sample_too_large_is_dropped() {
    let hub = Hub::default();
    // Small samples: kept by number, 600 of them.
    for seq in 1..=700 {
        hub.telemetry.record("small", sample(seq, 0), seq as i64);
    }
    assert_eq!(hub.telemetry.since("small", 0).len(), TELEMETRY_RING);
    // 60 KiB samples: what the ring holds stays within its byte budget, newest kept.
    for seq in 1..=700 {
        hub.telemetry
            .record("big", sample(seq, 60 << 10), seq as i64);
    }
    let ring = hub.telemetry.since("big", 0);
    // A sample's size as the ring counts it: its encoded frame.
    let bytes = |r: &TelemetryRecord| {
        ferric_proto::frame::to_frame(&r.sample, TELEMETRY_SAMPLE_MAX)
            .unwrap()
            .len()
    };
    let held: usize = ring.iter().map(bytes).sum();
    assert!(held <= TELEMETRY_RING_BYTES, "{held} bytes held");
    assert!(ring.len() > 10 && ring.len() < 100, "{} kept", ring.len());
    assert_eq!(ring.last().unwrap().sample.seq, 700);
    assert!(ring.iter().all(|r| bytes(r) > 50 << 10));
    // One over the sample limit is not kept at all.
    hub.telemetry.record("big", sample(701, 80 << 10), 701);
    assert_eq!(hub.telemetry.latest("big").unwrap().sample.seq, 700);
}
