use common::clock::ManualClock;
use time::OffsetDateTime;

use super::*;

const START_MS: i64 = 1_700_000_000_000;
const DELAY: Duration = Duration::from_secs(20);

fn repair(n: usize) -> Repair {
    Repair {
        user_id: format!("user-{n}"),
        session_id: format!("session-{n}"),
        reason: Some(RevokeReason::Logout),
    }
}

fn repairs(capacity: usize) -> (Arc<ManualClock>, Repairs, LabeledCounter) {
    let start = OffsetDateTime::from_unix_timestamp_nanos(i128::from(START_MS) * 1_000_000)
        .expect("a valid start");
    let clock = Arc::new(ManualClock::new(start));
    let outcomes = LabeledCounter::new("outcome", OUTCOMES);
    let repairs = Repairs::new(capacity, DELAY, clock.clone(), outcomes.clone());
    (clock, repairs, outcomes)
}

#[test]
fn the_queue_holds_at_most_its_capacity_counting_repairs_in_progress() {
    let mut queue = RepairQueue::new(3);
    for n in 0..3 {
        assert_eq!(queue.push(repair(n), START_MS), Queued::Added);
    }
    assert_eq!(queue.push(repair(3), START_MS), Queued::Full);
    assert_eq!(
        queue.push(repair(0), START_MS),
        Queued::Known,
        "known, even when full"
    );
    assert_eq!(queue.len(), 3);

    let taken = queue.take_due(START_MS, 2);
    assert_eq!(taken.len(), 2);
    assert_eq!(
        queue.push(repair(3), START_MS),
        Queued::Full,
        "taken ones still count"
    );
    queue.done(&taken[0].session_id);
    assert_eq!(queue.push(repair(3), START_MS), Queued::Added);
    assert_eq!(queue.len(), 3);
}

#[test]
fn a_full_queue_drops_and_counts_what_it_cannot_hold() {
    let (_, repairs, outcomes) = repairs(REPAIR_QUEUE_CAPACITY);
    for n in 0..REPAIR_QUEUE_CAPACITY + 5 {
        repairs.schedule(repair(n), START_MS);
    }
    assert_eq!(repairs.len(), REPAIR_QUEUE_CAPACITY);
    assert_eq!(outcomes.count("dropped"), 5);
    assert!(repairs.is_pending("session-0"));
    assert!(!repairs.is_pending(&format!("session-{REPAIR_QUEUE_CAPACITY}")));
}

#[test]
fn a_repair_falls_due_one_delay_after_its_revocation() {
    let (clock, repairs, _) = repairs(10);
    repairs.schedule(repair(1), START_MS - 5_000);
    repairs.schedule(repair(2), START_MS);
    assert!(repairs.take_due(10).is_empty(), "nothing before the delay");

    clock.advance(DELAY - Duration::from_millis(5_001));
    assert!(repairs.take_due(10).is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        repairs.take_due(10),
        [repair(1)],
        "the older revocation first"
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(repairs.take_due(10), [repair(2)]);
    assert!(repairs.take_due(10).is_empty(), "taken once");
    assert!(
        repairs.is_pending("session-1"),
        "pending while under repair"
    );
}

#[test]
fn a_reader_queues_a_repair_one_delay_from_now_without_a_reason() {
    let (clock, repairs, _) = repairs(10);
    repairs.schedule_now("user-1", "session-1");
    clock.advance(DELAY - Duration::from_millis(1));
    assert!(repairs.take_due(10).is_empty());
    clock.advance(Duration::from_millis(1));
    let taken = repairs.take_due(10);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].reason, None);
}

#[test]
fn a_known_session_keeps_its_place_and_learns_its_reason() {
    let mut queue = RepairQueue::new(10);
    let mut unknown = repair(1);
    unknown.reason = None;
    assert_eq!(queue.push(unknown, START_MS), Queued::Added);
    assert_eq!(queue.push(repair(1), START_MS + 60_000), Queued::Known);
    assert_eq!(
        queue.take_due(START_MS, 10),
        [repair(1)],
        "due as first queued, with the reason"
    );
}

#[test]
fn failed_repairs_come_back_after_a_doubling_backoff_and_leave_when_done() {
    let (clock, repairs, outcomes) = repairs(10);
    repairs.schedule(repair(1), START_MS - DELAY.as_millis() as i64);
    let mut waits = Vec::new();
    for _ in 0..8 {
        let taken = repairs.take_due(10);
        assert_eq!(taken, [repair(1)]);
        let backoff = repairs.failed("session-1").expect("queued");
        waits.push(backoff.as_secs());
        clock.advance(backoff - Duration::from_millis(1));
        assert!(repairs.take_due(10).is_empty(), "not before its backoff");
        clock.advance(Duration::from_millis(1));
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(outcomes.count("failed"), 8);

    assert_eq!(repairs.take_due(10), [repair(1)]);
    repairs.done("session-1", true);
    assert!(!repairs.is_pending("session-1"));
    assert!(repairs.is_empty());
    assert_eq!(outcomes.count("marked"), 1);
}

#[test]
fn done_with_a_waiting_repair_forgets_it_entirely() {
    let mut queue = RepairQueue::new(10);
    queue.push(repair(1), START_MS);
    queue.done("session-1");
    assert!(queue.is_empty());
    assert!(queue.take_due(START_MS, 10).is_empty());
    assert_eq!(
        queue.failed("session-1", START_MS),
        None,
        "unknown sessions are not retried"
    );
}

#[test]
fn the_delay_covers_a_late_mark_but_stays_far_inside_the_relevance() {
    let lookback = Duration::from_secs(15);
    let aws = Duration::from_secs(5);
    let relevance = Duration::from_secs(960);
    assert_eq!(
        repair_delay(lookback, aws, relevance),
        Duration::from_secs(20)
    );
    let short = Duration::from_secs(70);
    assert_eq!(
        repair_delay(lookback, aws, short),
        Duration::from_millis(17_500)
    );
}
