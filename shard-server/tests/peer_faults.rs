//! Peer faults in a real cluster: six `shard-server` processes whose
//! node-to-node traffic crosses fault-injecting TCP proxies
//! (`common/faultnet.rs`, a test tool). A node is cut off without dying (its
//! bytes vanish, nobody resets a connection, so the others only learn of it
//! through `cluster.peer_timeout_ms`), slowed far past the peer timeout, or
//! made to lie about its shards (files swapped between segments, truncated).
//! Each test checks the fault is detected, routed around, and repaired, and
//! that nothing acknowledged is lost. Figures are printed for
//! docs/RELIABILITY.md ("Peer faults") (`-- --nocapture`); no assertion is on speed, only
//! liveness bounds.
//!
//! The tests take a lock so they run one cluster at a time: six nodes and
//! thirty proxies per test share two cores, and the peer timeout is short.

mod common;
#[path = "peer_faults/harness.rs"]
mod harness;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ddc_formats::client::ClientError;
use ddc_formats::shard::ShardHeader;
use ddc_formats::wire::{AckLevel, ErrorCode};

use common::faultnet::Fault;
use harness::{consume_all, in_timeouts, produce, produce_range, FaultCluster, PEER_TIMEOUT};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn max(ds: &[Duration]) -> Duration {
    ds.iter().copied().max().unwrap_or_default()
}

/// A follower (which also holds a shard of every segment) is partitioned:
/// writes go on with the leader and the other follower, at both ack levels;
/// segments sealed meanwhile cannot be fully placed, so they stay whole; when
/// the partition heals the follower catches up and the held-back segments are
/// coded onto it. Finally, with the leader killed, both followers serve every
/// acknowledged record.
#[test]
fn partitioned_follower_is_routed_around_and_caught_up_after_it_heals() {
    let _one = one_at_a_time();
    let mut cluster = FaultCluster::start("scrub_interval_ms = 600000\n");
    let stream = "orders";
    let replicas = cluster.replicas(stream);
    let (leader, cut, other) = (replicas[0], replicas[1], replicas[2]);

    produce_range(&cluster, leader, stream, 0, 2000, 100);
    cluster.seal(stream, 2000);
    let coded_before = cluster.wait_coded(stream, Duration::from_secs(60));

    // The partition: the follower's links drop everything, both ways.
    cluster.partition(cut);
    let mut c = cluster.nodes[leader].client();
    let mut latencies = Vec::new();
    let mut acked = 0u64;
    let mut next = 2000u64;
    for batch in 0..60u64 {
        // Alternate the ack levels: WrittenNotSynced waits for no follower, Durable for the in-sync ones.
        let ack = if batch % 2 == 0 { AckLevel::Durable } else { AckLevel::WrittenNotSynced };
        let started = Instant::now();
        let base = produce(&mut c, stream, next, next + 50, ack).unwrap_or_else(|e| {
            panic!("produce {next} ({ack:?}) with a follower partitioned: {e}\n{}", cluster.logs())
        });
        latencies.push(started.elapsed());
        assert_eq!(base, next);
        next += 50;
        acked += 50;
    }
    let first_stall = latencies[0];
    // Seal during the partition: the segment cannot be coded (one holder is unreachable), so it stays whole.
    cluster.seal(stream, next);
    std::thread::sleep(PEER_TIMEOUT * 3);
    let health = cluster.shard_health(stream, false, &cluster.all());
    let stalled: Vec<u64> =
        cluster.sealed(stream).into_iter().filter(|b| !coded_before.contains(b)).collect::<Vec<_>>();
    assert!(!stalled.is_empty());
    for base in &stalled {
        let cut_index = cluster.holders(stream, *base).iter().position(|h| *h == cut).unwrap() as u8;
        let healthy = health.get(base).cloned().unwrap_or_default();
        assert!(!healthy.contains(&cut_index), "the partitioned node got shard {cut_index} of {base}: {health:?}");
    }
    assert!(cluster.nodes[other].log_files(stream) > 1, "the other follower dropped a copy of an uncoded segment");
    // More writes after the seal, into the open segment.
    let end = next + 500;
    produce_range(&cluster, leader, stream, next, end, 100);
    let dropped = cluster.node_link_stats(cut).bytes_dropped;
    assert!(dropped > 0, "the proxies dropped nothing: the partition did not happen");

    // Heal: the follower catches up and the held-back segments are coded onto it.
    let healed = Instant::now();
    cluster.heal(cut);
    let coded_after = cluster.wait_coded(stream, Duration::from_secs(60));
    let coded_in = healed.elapsed();
    assert!(stalled.iter().all(|b| coded_after.contains(b)));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = cluster.nodes[cut].own_stream_info(stream);
        if info.as_ref().is_some_and(|i| i.high_watermark == end) {
            break;
        }
        assert!(Instant::now() < deadline, "the healed follower did not catch up: {info:?}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let caught_up_in = healed.elapsed();
    let health = cluster.shard_health(stream, true, &[cut]);
    for base in &stalled {
        assert_eq!(health.get(base).map(Vec::len), Some(1), "the healed node's shard of {base}: {health:?}");
    }

    // Nothing acknowledged is lost: with the leader gone, each follower serves every record.
    cluster.nodes[leader].kill();
    consume_all(&cluster, cut, stream, end, true);
    consume_all(&cluster, other, stream, end, false);
    println!(
        "FIGURES partitioned follower: {acked} records acked in {} produces during the partition, \
         first acks=all produce took {:.2} peer timeouts (detection), slowest {:.2}; {dropped} bytes dropped; \
         after healing: {} held-back segments coded in {:.2} s, follower caught up in {:.2} s",
        latencies.len(),
        in_timeouts(first_stall),
        in_timeouts(max(&latencies)),
        stalled.len(),
        coded_in.as_secs_f64(),
        caught_up_in.as_secs_f64(),
    );
}

/// The leader of a stream is partitioned. Writes through another node are
/// refused within the peer timeout, with nothing written; reads through a
/// follower go around the leader and rebuild the sealed segments from the
/// five other shard holders. After healing, writes resume and every record is
/// there.
#[test]
fn partitioned_leader_reads_rebuild_from_the_other_holders() {
    let _one = one_at_a_time();
    let cluster = FaultCluster::start("scrub_interval_ms = 600000\n");
    let stream = "ledger";
    let replicas = cluster.replicas(stream);
    let (leader, follower) = (replicas[0], replicas[2]);
    produce_range(&cluster, leader, stream, 0, 3000, 100);
    cluster.seal(stream, 3000);
    let coded = cluster.wait_coded(stream, Duration::from_secs(60));
    // The follower drops its copies of coded segments: its reads of them need shards.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes[follower].log_files(stream) > 1 {
        assert!(Instant::now() < deadline, "the follower kept its coded segments");
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.partition(leader);
    let reads = consume_all(&cluster, follower, stream, 3000, false);
    // The follower remembers the leader timed out: reads right after do not ask it
    // again (nothing more is sent its way), so they do not wait out another timeout.
    let sent_to_leader = cluster.link_stats(follower, leader).bytes_dropped;
    let again = consume_all(&cluster, follower, stream, 3000, false);
    assert_eq!(
        cluster.link_stats(follower, leader).bytes_dropped,
        sent_to_leader,
        "reads right after a timeout asked the partitioned leader again"
    );

    // A write through the follower goes to the leader, which cannot be reached.
    let started = Instant::now();
    let refused = produce(&mut cluster.nodes[follower].client(), stream, 3000, 3001, AckLevel::Durable);
    let refused_in = started.elapsed();
    match refused {
        Err(ClientError::Server { code: ErrorCode::Unavailable, message }) => {
            assert!(message.contains("cannot be reached"), "{message}")
        }
        other => panic!("a write to a partitioned leader: {other:?}"),
    }

    cluster.heal(leader);
    // Connections that lost bytes are reset at the heal; the first write may still meet one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = cluster.nodes[follower].client();
    let mut refusals_after_heal = 0;
    loop {
        match produce(&mut c, stream, 3000, 3100, AckLevel::Durable) {
            Ok(base) => {
                // The write refused during the partition never reached the leader.
                assert_eq!(base, 3000, "the refused write was appended after all");
                break;
            }
            Err(e) => {
                refusals_after_heal += 1;
                assert!(Instant::now() < deadline, "writes did not resume after healing: {e}\n{}", cluster.logs());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    consume_all(&cluster, follower, stream, 3100, false);
    println!(
        "FIGURES partitioned leader: {} sealed segments read from shards in {} fetches, slowest {:.2} peer timeouts, \
         total {:.2}; read again right after: slowest {:.2}; a write refused after {:.2} peer timeouts; \
         {refusals_after_heal} refusals after healing",
        coded.len(),
        reads.len(),
        in_timeouts(max(&reads)),
        in_timeouts(reads.iter().sum()),
        in_timeouts(max(&again)),
        in_timeouts(refused_in),
    );
}

/// A shard holder answers 30 s late, far past the peer timeout. Reads that
/// need shards (the leader is down) go around it: every fetch completes well
/// within a client timeout that is shorter than the injected delay, so no
/// read waited for the slow node.
#[test]
fn slow_shard_holder_does_not_hold_up_reads() {
    let _one = one_at_a_time();
    let mut cluster = FaultCluster::start("scrub_interval_ms = 600000\n");
    let stream = "metrics";
    let replicas = cluster.replicas(stream);
    let (leader, follower) = (replicas[0], replicas[1]);
    let slow = (0..6).find(|i| !replicas.contains(i)).unwrap();
    produce_range(&cluster, leader, stream, 0, 3000, 100);
    cluster.seal(stream, 3000);
    let coded = cluster.wait_coded(stream, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while replicas[1..].iter().any(|&f| cluster.nodes[f].log_files(stream) > 1) {
        assert!(Instant::now() < deadline, "the followers kept their coded segments");
        std::thread::sleep(Duration::from_millis(50));
    }

    let delay = Duration::from_secs(30);
    cluster.set_node_links(slow, Fault::Delay(delay));
    cluster.nodes[leader].kill();
    let liveness = PEER_TIMEOUT * 8;
    assert!(liveness < delay);
    let mut client = cluster.nodes[follower].client();
    client.set_read_timeout(Some(liveness)).unwrap();
    let mut reads = Vec::new();
    let mut offset = 0;
    while offset < 3000 {
        let started = Instant::now();
        let fetched = client.fetch(stream, offset, 1 << 20, 0).unwrap_or_else(|e| {
            panic!("fetch {offset} with a slow holder (timeout {liveness:?}): {e}\n{}", cluster.logs())
        });
        reads.push(started.elapsed());
        for (o, r) in &fetched.records {
            assert_eq!(*o, offset);
            assert_eq!(r, &harness::record(offset));
            offset += 1;
        }
        assert!(!fetched.records.is_empty(), "nothing at {offset}");
    }
    println!(
        "FIGURES slow holder ({delay:?} per chunk): {} sealed segments read in {} fetches, slowest {:.2} peer timeouts",
        coded.len(),
        reads.len(),
        in_timeouts(max(&reads)),
    );
}

/// Swap two shard files on one node (each header valid, but naming the other
/// segment) and truncate one on another node. Reads served from shards detect
/// both (the shard served must be the one asked for; the body must match its
/// header) and rebuild from the honest holders; a repair pass flags the three
/// files and rewrites them.
#[test]
fn lying_shard_holders_are_detected_routed_around_and_repaired() {
    let _one = one_at_a_time();
    let cluster = FaultCluster::start("scrub_interval_ms = 600000\n");
    let stream = "events";
    let replicas = cluster.replicas(stream);
    let (leader, follower) = (replicas[0], replicas[1]);
    let total = 6000;
    produce_range(&cluster, leader, stream, 0, total, 100);
    cluster.seal(stream, total);
    let coded = cluster.wait_coded(stream, Duration::from_secs(60));
    assert!(coded.len() >= 2, "only {} sealed segments", coded.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.nodes[follower].log_files(stream) > 1 {
        assert!(Instant::now() < deadline, "the follower kept its coded segments");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The liar: a node (not the follower that will read) holding a data shard of
    // two segments, so a read of either fetches the swapped file first.
    let (a, b) = (coded[0], coded[1]);
    let data_index = |node: usize, base: u64| {
        cluster.holders(stream, base).iter().position(|h| *h == node).filter(|i| *i < 4).map(|i| i as u8)
    };
    let liar = (0..6)
        .find(|&n| n != follower && data_index(n, a).is_some() && data_index(n, b).is_some())
        .expect("some node holds a data shard of both segments");
    let (ia, ib) = (data_index(liar, a).unwrap(), data_index(liar, b).unwrap());
    let dir = cluster.nodes[liar].data_dir().join("shards").join(stream);
    let (file_a, file_b) = (dir.join(format!("{a:020}.{ia:03}.shard")), dir.join(format!("{b:020}.{ib:03}.shard")));
    let read = |f: &std::path::Path| {
        std::fs::read(f).unwrap_or_else(|e| {
            let listing = cluster.nodes[liar].shard_files(stream);
            panic!("{}: {e}; node {liar} holds {listing:?}\n{}", f.display(), cluster.logs())
        })
    };
    let (bytes_a, bytes_b) = (read(&file_a), read(&file_b));
    std::fs::write(&file_a, &bytes_b).unwrap();
    std::fs::write(&file_b, &bytes_a).unwrap();
    // A second liar lists a data shard of segment a whose body is cut short.
    let short = (0..6).find(|&n| n != follower && n != liar && data_index(n, a).is_some()).unwrap();
    let short_index = data_index(short, a).unwrap();
    let file_short =
        cluster.nodes[short].data_dir().join("shards").join(stream).join(format!("{a:020}.{short_index:03}.shard"));
    let full_short = std::fs::read(&file_short).unwrap();
    std::fs::OpenOptions::new().write(true).open(&file_short).unwrap().set_len(full_short.len() as u64 / 2).unwrap();

    // Reads served by the follower (which has no copy of the coded segments) rebuild them from shards.
    let reads = consume_all(&cluster, follower, stream, total, true);

    let report = cluster.repair_all();
    assert_eq!(report.shards_corrupt, 3, "{report:?}\n{}", cluster.logs());
    assert_eq!(report.shards_rebuilt, 3, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    // Every file is back, named for the shard its header describes, and intact.
    assert_eq!(std::fs::read(&file_a).unwrap(), bytes_a);
    assert_eq!(std::fs::read(&file_b).unwrap(), bytes_b);
    assert_eq!(std::fs::read(&file_short).unwrap(), full_short);
    for n in &cluster.nodes {
        for file in n.shard_files(stream) {
            let h = ShardHeader::decode(&std::fs::read(&file).unwrap()).unwrap();
            let name = format!("{:020}.{:03}.shard", h.base_offset, h.index);
            assert!(file.ends_with(&name), "{} holds {name}", file.display());
        }
    }
    let health = cluster.shard_health(stream, true, &cluster.all());
    assert!(health.values().all(|h| h.len() == 6), "{health:?}");
    let second = cluster.repair_all();
    assert_eq!((second.shards_corrupt, second.shards_missing, second.shards_rebuilt), (0, 0, 0), "{second:?}");
    consume_all(&cluster, follower, stream, total, true);
    println!(
        "FIGURES lying holders: {} segments read from shards in {} fetches with 3 lying shard files, \
         slowest {:.2} peer timeouts; repair: {} corrupt, {} rebuilt",
        coded.len(),
        reads.len(),
        in_timeouts(max(&reads)),
        report.shards_corrupt,
        report.shards_rebuilt,
    );
}

/// A follower's connections are reset (RST at once, and on every reconnect),
/// as when its process is gone but nothing else is wrong. Unlike a partition
/// this needs no timeout to notice: acks=all writes go on with the leader and
/// the other follower, and after the links pass again the follower catches up.
#[test]
fn reset_follower_connections_are_noticed_without_a_timeout() {
    let _one = one_at_a_time();
    let cluster = FaultCluster::start("scrub_interval_ms = 600000\n");
    let stream = "clicks";
    let replicas = cluster.replicas(stream);
    let (leader, cut) = (replicas[0], replicas[1]);
    produce_range(&cluster, leader, stream, 0, 500, 100);

    cluster.set_node_links(cut, Fault::Reset);
    let mut c = cluster.nodes[leader].client();
    let mut latencies = Vec::new();
    for i in 0..20u64 {
        let from = 500 + i * 50;
        let started = Instant::now();
        let base = produce(&mut c, stream, from, from + 50, AckLevel::Durable)
            .unwrap_or_else(|e| panic!("produce {from} with a follower's links reset: {e}\n{}", cluster.logs()));
        latencies.push(started.elapsed());
        assert_eq!(base, from);
    }
    let resets = cluster.node_link_stats(cut).connections_reset;
    assert!(resets > 0, "no connection was reset");

    cluster.heal(cut);
    let healed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.nodes[cut].own_stream_info(stream).map(|i| i.high_watermark) != Some(1500) {
        assert!(Instant::now() < deadline, "the follower did not catch up\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let caught_up_in = healed.elapsed();
    consume_all(&cluster, cut, stream, 1500, true);
    println!(
        "FIGURES reset follower: 1000 records acked in {} produces with {resets} connections reset, \
         first produce {:.2} peer timeouts, slowest {:.2}; caught up {:.2} s after the links passed again",
        latencies.len(),
        in_timeouts(latencies[0]),
        in_timeouts(max(&latencies)),
        caught_up_in.as_secs_f64(),
    );
}
