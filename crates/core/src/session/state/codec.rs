//! The changelog encoding of a [`UserState`]: compact binary, versioned by its first byte.
//!
//! Version 1 (first byte [`V1`]) is a flat sequence of LEB128 varints (signed ones zigzag-encoded),
//! fixed 8-byte little-endian floats and hashes, and length-prefixed UTF-8 strings:
//!
//! ```text
//! state    = V1 life count(sessions) session* count(held) held*
//! life     = flags(bit0 spend, bit1 last_purchase) uvar(sessions) uvar(purchases) [f64 spend]
//!            [ivar last_purchase] ivar(last_event)
//! session  = flags(bit0 purchased, bit1 dirty, bit2 rev, bit3 value, bit4 last_id = first_id)
//!            ivar(start) ivar(last - start) uvar(count) u8(stage) [f64 value] str(first_id)
//!            [str(last_id)] [uvar rev] count(frozen) u8(kind)* count(recent) step*
//!            count(published) ivar(published - start)*
//! step     = ivar(offset - previous offset) u8(kind) u64le(id hash)
//! held     = ivar(time - previous time) u8(kind | 0x80 when a value follows) [f64 value] str(id)
//! ```
//!
//! Every integer difference wraps, so any state round-trips exactly. Records written by earlier
//! versions are JSON (they start with `{`) and are still read.

use super::{Held, Kind, Lifetime, Path, Sess, Step, UserState};
pub use crate::state_codec::StateDecodeError;
use crate::state_codec::{Reader, Writer, err};
use clickpath_schema::FunnelStage;

/// First byte of a version-1 binary state (JSON, the earlier format, starts with `{`).
pub(super) const V1: u8 = 0xC1;

const FUNNEL: [FunnelStage; 5] = [
    FunnelStage::Browse,
    FunnelStage::ProductView,
    FunnelStage::Cart,
    FunnelStage::Checkout,
    FunnelStage::Purchase,
];

fn funnel_index(s: FunnelStage) -> u8 {
    match s {
        FunnelStage::Browse => 0,
        FunnelStage::ProductView => 1,
        FunnelStage::Cart => 2,
        FunnelStage::Checkout => 3,
        FunnelStage::Purchase => 4,
    }
}

/// Appends the version-1 encoding of `st` to `out`.
pub(super) fn encode(st: &UserState, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(V1);
    let l = &st.life;
    let spend = l.spend.to_bits() != 0;
    w.u8(u8::from(spend) | (u8::from(l.last_purchase.is_some()) << 1));
    w.uvar(l.sessions);
    w.uvar(l.purchases);
    if spend {
        w.f64(l.spend);
    }
    if let Some(p) = l.last_purchase {
        w.ivar(p);
    }
    w.ivar(l.last_event);

    w.uvar(st.sessions.len() as u64);
    for s in &st.sessions {
        let value = s.value.to_bits() != 0;
        let same_ids = s.last_id == s.first_id;
        w.u8(u8::from(s.purchased)
            | (u8::from(s.dirty) << 1)
            | (u8::from(s.rev.is_some()) << 2)
            | (u8::from(value) << 3)
            | (u8::from(same_ids) << 4));
        w.ivar(s.start);
        w.ivar(s.last.wrapping_sub(s.start));
        w.uvar(u64::from(s.count));
        w.u8(funnel_index(s.stage));
        if value {
            w.f64(s.value);
        }
        w.str(&s.first_id);
        if !same_ids {
            w.str(&s.last_id);
        }
        if let Some(r) = s.rev {
            w.uvar(u64::from(r));
        }
        w.uvar(s.frozen.0.len() as u64);
        for &k in &s.frozen.0 {
            w.kind(k, 0);
        }
        w.uvar(s.recent.len() as u64);
        let mut prev = 0i64;
        for st in &s.recent {
            w.ivar(st.0.wrapping_sub(prev));
            prev = st.0;
            w.kind(st.1.0, 0);
            w.u64(st.2);
        }
        w.uvar(s.published.len() as u64);
        for &p in &s.published {
            w.ivar(p.wrapping_sub(s.start));
        }
    }

    w.uvar(st.held.len() as u64);
    let mut prev = 0i64;
    for h in &st.held {
        w.ivar(h.0.wrapping_sub(prev));
        prev = h.0;
        let value = h.2.to_bits() != 0;
        w.kind(h.1.0, if value { 0x80 } else { 0 });
        if value {
            w.f64(h.2);
        }
        w.str(&h.3);
    }
}

/// Reads a version-1 record (the caller has checked the first byte).
pub(super) fn decode_v1(bytes: &[u8]) -> Result<UserState, StateDecodeError> {
    let mut r = Reader {
        buf: bytes.get(1..).ok_or_else(|| err("empty"))?,
    };
    let flags = r.u8()?;
    let sessions = r.uvar()?;
    let purchases = r.uvar()?;
    let spend = if flags & 1 != 0 { r.f64()? } else { 0.0 };
    let last_purchase = if flags & 2 != 0 {
        Some(r.ivar()?)
    } else {
        None
    };
    let life = Lifetime {
        sessions,
        purchases,
        spend,
        last_purchase,
        last_event: r.ivar()?,
    };

    let n = r.count(8)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.u8()?;
        let start = r.ivar()?;
        let last = start.wrapping_add(r.ivar()?);
        let count = r.u32()?;
        let stage = *FUNNEL
            .get(usize::from(r.u8()?))
            .ok_or_else(|| err("funnel stage out of range"))?;
        let value = if flags & 8 != 0 { r.f64()? } else { 0.0 };
        let first_id = r.str()?;
        let last_id = if flags & 16 != 0 {
            first_id.clone()
        } else {
            r.str()?
        };
        let rev = if flags & 4 != 0 { Some(r.u32()?) } else { None };
        let frozen = (0..r.count(1)?)
            .map(|_| r.kind().map(|k| k.0))
            .collect::<Result<Vec<_>, _>>()?;
        let steps = r.count(10)?;
        let mut recent = Vec::with_capacity(steps);
        let mut prev = 0i64;
        for _ in 0..steps {
            prev = prev.wrapping_add(r.ivar()?);
            let (k, _) = r.kind()?;
            recent.push(Step(prev, Kind(k), r.u64()?));
        }
        let published = (0..r.count(1)?)
            .map(|_| r.ivar().map(|d| start.wrapping_add(d)))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Sess {
            start,
            last,
            count,
            stage,
            purchased: flags & 1 != 0,
            value,
            first_id,
            last_id,
            frozen: Path(frozen),
            recent,
            rev,
            dirty: flags & 2 != 0,
            published,
        });
    }

    let n = r.count(3)?;
    let mut held = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(r.ivar()?);
        let (k, has_value) = r.kind()?;
        let value = if has_value { r.f64()? } else { 0.0 };
        held.push(Held(prev, Kind(k), value, r.str()?));
    }
    if !r.buf.is_empty() {
        return Err(err("trailing bytes"));
    }
    Ok(UserState {
        sessions: out,
        held,
        life,
    })
}
