//! The console's credit driven directly: sends, reports and time in; the return time, the
//! delivery rate and the in-flight bound out.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use protocol::codec::Frame;
use protocol::codec::Mode;
use protocol::proto::Limits;
use protocol::rules::credit::{DeliveryClock, GapLedger, GAP_COST, MIN_RATE_INTERVAL};
use protocol::rules::server::{
    in_flight_bound, ConsoleAction, ConsoleRules, PathEstimate, DELIVERY_GAIN, MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_WITH_AUDIO, RETURN_RTTS,
};

const MS: Duration = Duration::from_millis(1);

fn path(window: u64, rtt_ms: u64, delivery_rate: u64) -> PathEstimate {
    PathEstimate {
        window,
        rtt: MS * rtt_ms as u32,
        delivery_rate,
    }
}

#[test]
fn the_return_time_runs_from_the_send_to_the_report_covering_it() {
    let t0 = Instant::now();
    let mut c = DeliveryClock::new(1000);
    c.sent(2000, t0);
    c.sent(3000, t0 + 5 * MS);
    c.sent(3000, t0 + 9 * MS);
    assert_eq!(
        c.consumed(1500, 1500, t0 + 20 * MS, MS),
        None,
        "no send covered yet"
    );
    assert_eq!(c.consumed(2000, 2000, t0 + 30 * MS, MS), Some(30 * MS));
    // A resent offset is not a new send: 3000 left at 5 ms.
    assert_eq!(c.consumed(3000, 3000, t0 + 65 * MS, MS), Some(60 * MS));
    assert_eq!(c.return_time(), Some(60 * MS));
    // Old or repeated reports change nothing.
    assert_eq!(c.consumed(2500, 2500, t0 + 90 * MS, MS), None);
    assert_eq!(c.consumed(3000, 3000, t0 + 90 * MS, MS), None);
    assert_eq!(c.return_time(), Some(60 * MS));
}

#[test]
fn many_sends_never_make_the_return_time_look_shorter_than_it_was() {
    let t0 = Instant::now();
    let mut c = DeliveryClock::new(0);
    for i in 0..10_000u64 {
        c.sent((i + 1) * 100, t0 + Duration::from_micros(i));
    }
    let at = t0 + 50 * MS;
    let got = c
        .consumed(1_000_000, 1_000_000, at, MS)
        .expect("covers every send");
    assert!(
        got >= at - (t0 + Duration::from_micros(9_999)),
        "return time {got:?} shorter than the last send's"
    );
}

#[test]
fn the_delivery_rate_is_the_largest_recent_sample_and_a_stall_does_not_erase_it() {
    let t0 = Instant::now();
    let mut c = DeliveryClock::new(0);
    assert_eq!(c.rate(), 0);
    let rtt = 20 * MS;
    // 1 MB per 20 ms: 50 MB/s.
    let mut t = t0;
    let mut off = 0;
    c.consumed(1, 1, t, rtt);
    for _ in 0..5 {
        t += rtt;
        off += 1_000_000;
        c.consumed(off, off, t, rtt);
    }
    let rate = c.rate();
    assert!((49_000_000..=51_000_000).contains(&rate), "rate {rate}");
    // A loss holds the reads for 60 ms, then little arrives: one low sample.
    t += 3 * rtt;
    off += 100_000;
    c.consumed(off, off, t, rtt);
    assert_eq!(
        c.rate(),
        rate,
        "one stalled interval does not lower the estimate"
    );
    // Reports closer together than the interval make no sample.
    c.consumed(
        off + 10_000_000,
        off + 10_000_000,
        t + MIN_RATE_INTERVAL / 2,
        rtt,
    );
    assert_eq!(c.rate(), rate);
}

#[test]
fn the_bound_covers_what_the_client_takes_over_several_round_trips() {
    let limits = Limits::default();
    let floor = limits.console_in_flight_with_audio;
    // 20 MB/s read at 20 ms: 2 x 20 MB/s x 80 ms = 3.2 MB, above four small windows.
    assert_eq!(
        in_flight_bound(&limits, true, path(100_000, 20, 20_000_000)),
        DELIVERY_GAIN * 20_000_000 * u64::from(RETURN_RTTS) * 20 / 1000
    );
    // The window's term when it is the larger.
    assert_eq!(
        in_flight_bound(&limits, true, path(1_000_000, 20, 1_000_000)),
        4_000_000
    );
    // Nothing measured yet: the floor.
    assert_eq!(
        in_flight_bound(&limits, true, PathEstimate::default()),
        floor
    );
    assert_eq!(
        in_flight_bound(&limits, false, PathEstimate::default()),
        limits.console_in_flight
    );
    // A fast path: the ceiling, lower while audio is live.
    for (audio, ceiling) in [(true, MAX_IN_FLIGHT_WITH_AUDIO), (false, MAX_IN_FLIGHT)] {
        assert_eq!(
            in_flight_bound(&limits, audio, path(u64::MAX, 1000, u64::MAX)),
            ceiling
        );
    }
}

#[test]
fn a_stopped_client_holds_at_most_the_ceiling_per_stream() {
    let limits = Limits::default();
    let mut c = ConsoleRules::new("vm/hvc0", Mode::Read, 0);
    let fast = path(64 << 20, 500, 1 << 30);
    let mut sent = 0;
    while c.allowance(in_flight_bound(&limits, false, fast)) > 0 {
        sent += 64 << 10;
        c.sent(sent);
    }
    assert_eq!(c.in_flight(), MAX_IN_FLIGHT);
}

/// The console's rate when the credit comes back `return_ms` after the bytes leave and the
/// path carries `capacity` bytes per second, after `turns` updates of the bound from what
/// was delivered (each turn one return time).
fn settle(limits: &Limits, rtt_ms: u64, return_ms: u64, capacity: u64, turns: usize) -> u64 {
    let mut bound = in_flight_bound(limits, true, PathEstimate::default());
    let mut rate = 0;
    for _ in 0..turns {
        rate = (bound * 1000 / return_ms).min(capacity);
        bound = in_flight_bound(limits, true, path(0, rtt_ms, rate));
    }
    rate
}

#[test]
fn held_only_by_the_credit_the_console_grows_to_the_path_rate() {
    let limits = Limits::default();
    // 1% loss at 20 ms: credit back after about three round trips; the path carries 50
    // MB/s. From the 64 KiB floor, with no window known at all.
    assert_eq!(settle(&limits, 20, 60, 50_000_000, 20), 50_000_000);
    // Even when a lost retransmission makes it seven round trips (slower: each turn the
    // bound grows by DELIVERY_GAIN x RETURN_RTTS / 7).
    assert_eq!(settle(&limits, 20, 140, 25_000_000, 60), 25_000_000);
}

#[test]
fn a_gap_holds_the_credit_for_its_frame_only_until_the_client_reports_past_it() {
    let mut c = ConsoleRules::new("vm/hvc0", Mode::Read, 1000);
    c.sent(2000);
    // 16 MiB the journal no longer has: a frame on the wire, not 16 MiB in flight.
    c.skipped(2000, 16 << 20);
    c.sent(2000 + (16 << 20));
    c.sent(3000 + (16 << 20));
    assert_eq!(c.in_flight(), 1000 + GAP_COST + 1000);
    assert_eq!(c.allowance(1 << 20), (1 << 20) - 2000 - GAP_COST);
    let report = |c: &mut ConsoleRules, offset| {
        assert_eq!(
            c.on_frame(Some(Frame::Consumed { offset })),
            ConsoleAction::Continue
        );
    };
    report(&mut c, 1500);
    assert_eq!(c.in_flight(), 500 + GAP_COST + 1000);
    assert_eq!(c.delivered(), 500);
    // A report into the gap (a client may report any offset it passed).
    report(&mut c, 2000 + (1 << 20));
    assert_eq!(c.in_flight(), GAP_COST + 1000);
    assert_eq!(c.delivered(), 1000, "gap bytes are not delivered data");
    report(&mut c, 2500 + (16 << 20));
    assert_eq!(c.in_flight(), 500);
    assert_eq!(c.delivered(), 1500);
}

#[test]
fn adjacent_gaps_merge_and_too_many_are_charged_in_full() {
    let mut g = GapLedger::default();
    assert!(g.sent(0, 100));
    assert!(g.sent(100, 100), "adjacent: one gap");
    assert_eq!(g.uncharged(0), 200 - GAP_COST);
    let mut at = 1000;
    let mut charged = 0;
    while g.sent(at, 1000) {
        at += 2000;
        charged += 1;
    }
    assert!(
        (1..=4096).contains(&charged),
        "the ledger is bounded ({charged} gaps kept)"
    );
    assert_eq!(g.skipped_before(150), 150);
    g.consumed(at);
    assert_eq!(g.uncharged(at), 0);
    assert_eq!(g.skipped_before(at), 200 + 1000 * charged);
}

proptest! {
    #[test]
    fn the_bound_stays_within_floor_and_ceiling_and_grows_with_the_path(
        window in 0u64..1 << 32,
        rtt_ms in 0u64..2000,
        rate in 0u64..1 << 34,
        more in 1u64..1 << 24,
        audio in any::<bool>(),
    ) {
        let limits = Limits::default();
        let (floor, ceiling) = if audio {
            (limits.console_in_flight_with_audio, MAX_IN_FLIGHT_WITH_AUDIO)
        } else {
            (limits.console_in_flight, MAX_IN_FLIGHT)
        };
        let b = in_flight_bound(&limits, audio, path(window, rtt_ms, rate));
        prop_assert!(b >= floor && b <= ceiling.max(floor));
        prop_assert!(b >= (4 * window).min(ceiling));
        for bigger in [
            path(window + more, rtt_ms, rate),
            path(window, rtt_ms + more % 1000, rate),
            path(window, rtt_ms, rate + more),
        ] {
            prop_assert!(in_flight_bound(&limits, audio, bigger) >= b);
        }
        prop_assert!(in_flight_bound(&limits, true, path(window, rtt_ms, rate))
            <= in_flight_bound(&limits, false, path(window, rtt_ms, rate)));
    }

    #[test]
    fn a_credit_held_console_never_loses_ground(
        rtt_ms in 1u64..500,
        return_rtts in 1u64..=8,
        bound_kib in 64u64..(4 << 10),
    ) {
        // The credit is what holds the rate (the path would take more): the next bound,
        // from the rate that produced, is at least this one while the credit returns
        // within RETURN_RTTS x DELIVERY_GAIN round trips.
        let limits = Limits::default();
        let bound = bound_kib << 10;
        let return_ms = rtt_ms * return_rtts;
        let rate = bound * 1000 / return_ms;
        let next = in_flight_bound(&limits, true, path(0, rtt_ms, rate));
        prop_assert!(next + 1024 >= bound, "{bound} -> {next}");
    }
}
