//! Byte ranges in canonical form and one owner's set of ranges.
//!
//! A [`Span`] is first and last byte, inclusive, so "to end of file" is
//! `last == u64::MAX` and no arithmetic can overflow. One owner's locks on a
//! file are a `Vec<Held>` kept canonical: sorted by start, non-overlapping,
//! and no two same-kind neighbours touching (they are merged).

use serde::{Deserialize, Serialize};

use super::{LockKind, LockRange};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    pub start: u64,
    pub last: u64,
}

impl Span {
    /// `len == 0`, or `offset + len - 1` past `u64::MAX`, runs to end of file.
    pub fn of(range: LockRange) -> Span {
        let last = match range.len {
            0 => u64::MAX,
            len => range.offset.saturating_add(len - 1),
        };
        Span { start: range.offset, last }
    }

    /// Back to NLM form; a span ending on `u64::MAX` has `len == 0`.
    pub fn range(self) -> LockRange {
        let len = if self.last == u64::MAX { 0 } else { self.last - self.start + 1 };
        LockRange { offset: self.start, len }
    }

    pub fn overlaps(self, other: Span) -> bool {
        self.start <= other.last && other.start <= self.last
    }

    pub fn contains(self, other: Span) -> bool {
        self.start <= other.start && other.last <= self.last
    }

    /// `other` starts on the byte right after `self` ends.
    pub fn touches_before(self, other: Span) -> bool {
        self.last != u64::MAX && self.last + 1 == other.start
    }
}

/// One lock of one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub span: Span,
    pub kind: LockKind,
}

/// `list` with `span` set to `kind` (or released, for `None`): what lies
/// outside `span` keeps its kind, split where needed; the result is canonical.
pub fn set_span(list: &[Held], span: Span, kind: Option<LockKind>) -> Vec<Held> {
    let mut out = Vec::with_capacity(list.len() + 2);
    for held in list {
        if !held.span.overlaps(span) {
            out.push(*held);
            continue;
        }
        // Both subtractions are safe: the strict comparisons leave room.
        if held.span.start < span.start {
            out.push(Held { span: Span { start: held.span.start, last: span.start - 1 }, kind: held.kind });
        }
        if held.span.last > span.last {
            out.push(Held { span: Span { start: span.last + 1, last: held.span.last }, kind: held.kind });
        }
    }
    if let Some(kind) = kind {
        out.push(Held { span, kind });
    }
    out.sort_by_key(|h| h.span.start);
    let mut merged: Vec<Held> = Vec::with_capacity(out.len());
    for held in out {
        if let Some(prev) = merged.last_mut() {
            if prev.kind == held.kind && prev.span.touches_before(held.span) {
                prev.span.last = held.span.last;
                continue;
            }
        }
        merged.push(held);
    }
    merged
}

/// Every byte of `span` is held with `kind`. On a canonical list that means
/// one entry contains it (same-kind neighbours are merged).
pub fn covers(list: &[Held], span: Span, kind: LockKind) -> bool {
    list.iter().any(|h| h.kind == kind && h.span.contains(span))
}

/// Some byte of `span` is held (any kind).
pub fn touches(list: &[Held], span: Span) -> bool {
    list.iter().any(|h| h.span.overlaps(span))
}

/// Why a list is not canonical, if it is not.
pub fn canonical_error(list: &[Held]) -> Option<&'static str> {
    if list.is_empty() {
        return Some("an owner with no locks is kept");
    }
    for held in list {
        if held.span.start > held.span.last {
            return Some("a lock ends before it starts");
        }
    }
    for pair in list.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.span.last >= b.span.start {
            return Some("one owner's locks overlap or are out of order");
        }
        if a.kind == b.kind && a.span.touches_before(b.span) {
            return Some("one owner's same-kind neighbours are not merged");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockKind::{Exclusive as X, Shared as S};

    fn sp(start: u64, last: u64) -> Span {
        Span { start, last }
    }

    #[test]
    fn ranges_to_spans_saturate() {
        assert_eq!(Span::of(LockRange { offset: 5, len: 0 }), sp(5, u64::MAX));
        assert_eq!(Span::of(LockRange { offset: 5, len: 10 }), sp(5, 14));
        assert_eq!(Span::of(LockRange { offset: u64::MAX, len: 1 }), sp(u64::MAX, u64::MAX));
        assert_eq!(Span::of(LockRange { offset: u64::MAX, len: u64::MAX }), sp(u64::MAX, u64::MAX));
        assert_eq!(Span::of(LockRange { offset: 1 << 63, len: 1 << 63 }), sp(1 << 63, u64::MAX));
        assert_eq!(Span::of(LockRange { offset: 0, len: u64::MAX }), sp(0, u64::MAX - 1));
        assert_eq!(sp(0, u64::MAX - 1).range(), LockRange { offset: 0, len: u64::MAX });
        assert_eq!(sp(7, u64::MAX).range(), LockRange { offset: 7, len: 0 });
        assert!(!sp(0, u64::MAX).touches_before(sp(0, 0)));
    }

    #[test]
    fn set_splits_merges_and_releases() {
        let whole = vec![Held { span: sp(0, 99), kind: S }];
        let mid = set_span(&whole, sp(40, 49), Some(X));
        assert_eq!(
            mid,
            vec![
                Held { span: sp(0, 39), kind: S },
                Held { span: sp(40, 49), kind: X },
                Held { span: sp(50, 99), kind: S }
            ]
        );
        assert_eq!(set_span(&mid, sp(40, 49), Some(S)), whole);
        assert_eq!(set_span(&mid, sp(0, u64::MAX), None), vec![]);
        let adjacent = set_span(&whole, sp(100, 199), Some(S));
        assert_eq!(adjacent, vec![Held { span: sp(0, 199), kind: S }]);
        assert!(covers(&adjacent, sp(50, 150), S));
        assert!(!covers(&mid, sp(30, 45), S));
        assert_eq!(canonical_error(&mid), None);
    }
}
