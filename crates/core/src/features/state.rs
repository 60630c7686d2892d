//! The changelog encoding of one user's windower state: compact binary, versioned by its first byte.
//!
//! Version 1 (first byte `0xF1`), built from the shared [`crate::state_codec`] fields:
//!
//! ```text
//! state   = 0xF1 ivar(last_time) ivar(last_time - run_start) uvar(run_events) f64(cart_value)
//!           flags(bit0 last_purchase) [ivar(last_time - last_purchase)] uvar(purchases)
//!           count(windows) uvar(first - head)* count(entries) entry*
//! entry   = ivar(time - previous time) u8(event type | 0x80 when an item hash follows) [u64le item]
//! ```
//!
//! The window counts are not stored: they are the entries from each window's first one on, and are
//! rebuilt on restore, so a restored user's next features equal those of a user never moved.

use super::{Entry, UserFeatures, WindowCounts};
use crate::state_codec::{Reader, StateDecodeError, Writer, err};

const V1: u8 = 0xF1;

/// Appends the version-1 encoding of `u` to `out`.
pub(super) fn encode(u: &UserFeatures, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(V1);
    w.ivar(u.last_time);
    w.ivar(u.last_time.wrapping_sub(u.run_start));
    w.uvar(u64::from(u.run_events));
    w.f64(u.cart_value);
    w.u8(u8::from(u.last_purchase.is_some()));
    if let Some(p) = u.last_purchase {
        w.ivar(u.last_time.wrapping_sub(p));
    }
    w.uvar(u64::from(u.purchases));
    w.uvar(u.windows.len() as u64);
    for win in &u.windows {
        w.uvar(win.first - u.head);
    }
    w.uvar(u.entries.len() as u64);
    let mut prev = 0i64;
    for e in &u.entries {
        w.ivar(e.time.wrapping_sub(prev));
        prev = e.time;
        w.kind(e.event_type, if e.item.is_some() { 0x80 } else { 0 });
        if let Some(h) = e.item {
            w.u64(h);
        }
    }
}

/// Reads a version-1 state for a windower with `n_windows` windows; corrupt bytes, or a state
/// written for another number of windows, give an error, never a panic.
pub(super) fn decode(bytes: &[u8], n_windows: usize) -> Result<UserFeatures, StateDecodeError> {
    let mut r = Reader { buf: bytes };
    match r.u8() {
        Ok(V1) => {}
        Ok(b) => return Err(StateDecodeError(format!("unknown format byte 0x{b:02x}"))),
        Err(_) => return Err(err("empty value")),
    }
    let last_time = r.ivar()?;
    let run_start = last_time.wrapping_sub(r.ivar()?);
    let run_events = r.u32()?;
    let cart_value = r.f64()?;
    let last_purchase = match r.u8()? {
        0 => None,
        1 => Some(last_time.wrapping_sub(r.ivar()?)),
        _ => return Err(err("unknown flags")),
    };
    let purchases = r.u32()?;
    let windows = r.count(1)?;
    if windows != n_windows {
        return Err(StateDecodeError(format!(
            "state has {windows} windows, the spec {n_windows}"
        )));
    }
    let firsts = (0..windows)
        .map(|_| r.uvar())
        .collect::<Result<Vec<u64>, _>>()?;
    let n = r.count(2)?;
    let mut entries = std::collections::VecDeque::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(r.ivar()?);
        let (event_type, has_item) = r.kind()?;
        let item = if has_item { Some(r.u64()?) } else { None };
        entries.push_back(Entry {
            time: prev,
            event_type,
            item,
        });
    }
    if !r.buf.is_empty() {
        return Err(err("bytes after the last entry"));
    }
    if firsts.iter().any(|&f| f > n as u64) {
        return Err(err("window start past the last entry"));
    }
    let windows = firsts
        .iter()
        .map(|&first| {
            let mut w = WindowCounts {
                first,
                ..WindowCounts::default()
            };
            for e in entries.iter().skip(first as usize) {
                w.add(e);
            }
            w
        })
        .collect();
    Ok(UserFeatures {
        entries,
        head: 0,
        windows,
        last_time,
        run_start,
        run_events,
        cart_value,
        last_purchase,
        purchases,
    })
}
