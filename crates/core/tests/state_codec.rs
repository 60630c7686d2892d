//! The sessionizer's changelog encoding ([`UserState::to_bytes`] / [`UserState::from_bytes`]):
//! every state round-trips exactly, the JSON of earlier versions is still read, a restore from the
//! binary changelog continues exactly, and corrupt bytes give an error, never a panic.

use clickpath_core::{SessionConfig, Sessionizer, UserState};
use clickpath_schema::{ClickEvent, EventType, SessionSummary};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn cfg() -> SessionConfig {
    SessionConfig {
        gap_ms: 1_000,
        max_session_ms: 4_000,
        max_out_of_orderness_ms: 50,
        max_path_len: 5,
        allowed_lateness_ms: 1_500,
        user_ttl_ms: i64::MAX / 4,
        ..SessionConfig::default()
    }
}

/// `(user, time step, kind, order value, arrival delay, duplicate)` per event.
fn events() -> impl Strategy<Value = Vec<ClickEvent>> {
    prop::collection::vec(
        (
            0u8..4,
            prop_oneof![3 => 0i64..300, 1 => 900i64..3_000],
            0usize..EventType::COUNT,
            prop::option::of(-5.0f64..500.0),
            prop_oneof![8 => Just(0i64), 1 => 50i64..1_600, 1 => 1_500i64..3_000],
            prop::bool::weighted(0.1),
        ),
        1..150,
    )
    .prop_map(|steps| {
        let mut clock = [1_764_331_200_000i64; 4];
        let mut keyed = Vec::new();
        for (i, (user, dt, k, value, delay, dup)) in steps.into_iter().enumerate() {
            let u = usize::from(user);
            clock[u] += dt;
            let mut e = ClickEvent::new(
                format!("{i:08x}-7d3c-4b1e-9f2a-é{i}"),
                format!("user-{u}"),
                EventType::ALL[k],
                clock[u],
            );
            e.order_value = value;
            let at = e.event_time + delay;
            if dup {
                keyed.push((at + 40, e.clone()));
            }
            keyed.push((at, e));
        }
        keyed.sort_by_key(|(t, _)| *t);
        keyed.into_iter().map(|(_, e)| e).collect()
    })
}

/// Every state a sessionizer reports while it reads `stream`, with changelog captures every
/// `every` events.
fn states(stream: &[ClickEvent], every: usize) -> Vec<UserState> {
    let mut s = Sessionizer::new(cfg());
    let mut out = Vec::new();
    for (i, e) in stream.iter().enumerate() {
        s.on_event(e);
        if i % every.max(1) == 0 {
            out.extend(s.take_changed().into_iter().filter_map(|(_, st)| st));
        }
    }
    out.extend(s.take_changed().into_iter().filter_map(|(_, st)| st));
    out
}

proptest! {
    #[test]
    fn binary_and_json_round_trip(stream in events(), every in 1usize..20) {
        let mut json_total = 0;
        let mut binary_total = 0;
        for st in states(&stream, every) {
            let bin = st.to_bytes();
            prop_assert_eq!(&UserState::from_bytes(&bin).expect("decodes"), &st);
            let json = serde_json::to_vec(&st).expect("serialises");
            prop_assert_eq!(&UserState::from_bytes(&json).expect("old JSON decodes"), &st);
            json_total += json.len();
            binary_total += bin.len();
            // Every cut of a valid record is an error, not a panic or a wrong state.
            for cut in 0..bin.len() {
                prop_assert!(UserState::from_bytes(&bin[..cut]).is_err());
            }
        }
        prop_assert!(binary_total <= json_total);
    }

    #[test]
    fn restore_from_the_binary_changelog_continues_exactly(
        stream in events(),
        split in 0.0f64..1.0,
    ) {
        let split = (split * stream.len() as f64) as usize;
        let mut whole = Sessionizer::new(cfg());
        let mut expected: Vec<SessionSummary> =
            stream.iter().flat_map(|e| whole.on_event(e)).collect();
        expected.extend(whole.flush());

        let mut first = Sessionizer::new(cfg());
        let mut got: Vec<SessionSummary> =
            stream[..split].iter().flat_map(|e| first.on_event(e)).collect();
        let mut log: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (user, st) in first.take_changed() {
            match st {
                Some(st) => log.insert(user, st.to_bytes()),
                None => log.remove(&user),
            };
        }
        let mut second = Sessionizer::new(cfg());
        for (user, bytes) in log {
            second.restore_user(user, UserState::from_bytes(&bytes).expect("decodes"));
        }
        second.restore_watermark(first.watermark());
        got.extend(stream[split..].iter().flat_map(|e| second.on_event(e)));
        got.extend(second.flush());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..200), v1 in any::<bool>()) {
        if v1 && !bytes.is_empty() {
            bytes[0] = 0xC1;
        }
        let _ = UserState::from_bytes(&bytes);
    }
}

#[test]
fn unknown_formats_are_errors() {
    assert!(UserState::from_bytes(b"").is_err());
    assert!(UserState::from_bytes(&[0x02, 0, 0]).is_err());
    assert!(UserState::from_bytes(b"{\"nope\": 1}").is_err());
    // A huge declared count is refused before anything is allocated.
    assert!(UserState::from_bytes(&[0xC1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

/// The typical active user of `session_model.rs` (20 events 30 s apart, UUID ids): the binary
/// value is much smaller than the JSON one.
#[test]
fn a_typical_users_binary_state_is_small() {
    let mut s = Sessionizer::new(SessionConfig::default());
    let t0 = 1_764_331_200_000;
    for i in 0..20i64 {
        let id = format!("{:08x}-7d3c-4b1e-9f2a-{:012x}", 0x5eed_0000 + i, i * 7919);
        s.on_event(&ClickEvent::new(
            id,
            "user-0042",
            EventType::ProductView,
            t0 + i * 30_000,
        ));
    }
    let st = s.take_changed().remove(0).1.expect("state");
    let json = serde_json::to_vec(&st).unwrap().len();
    let bin = st.to_bytes().len();
    println!("one active user: JSON {json} bytes, binary {bin} bytes");
    assert!(bin * 2 < json, "binary {bin} vs JSON {json}");
}
