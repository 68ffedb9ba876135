//! The node-wide memory budgets of the TCP transport (`limits::Limits`):
//! bytes of requests (`request_bytes_max`: large records being read and the
//! arguments of calls not finished) and bytes of replies (`reply_bytes_max`:
//! reserved for running calls or not yet written). Both are semaphores of
//! bytes, so a connection waits its turn (first come, first served) instead
//! of allocating past the bound.
//!
//! A call reserves its connection's reply estimate before it starts
//! (`reserve_reply`); once its reply exists the reservation is resized to the
//! reply's real size (`ReplyCharge::resize`): the excess goes back, a larger
//! reply takes what is free and counts the rest as an overdraft (it exists
//! already; at most one reply per running call). The charge travels with
//! the reply to the writer and is released once the reply is written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limits::Limits;
use super::registry::ConnState;

/// The two node-wide budgets.
pub struct Budgets {
    request: Arc<Semaphore>,
    request_max: usize,
    reply: Arc<Semaphore>,
    reply_max: usize,
    /// Reply bytes charged now, overdrafts included.
    reply_bytes: Arc<AtomicUsize>,
}

/// Bytes as semaphore permits (a single acquire takes at most `u32::MAX`).
fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl Budgets {
    pub fn new(limits: &Limits) -> Budgets {
        let request_max = limits.request_bytes_max.min(Semaphore::MAX_PERMITS);
        let reply_max = limits.reply_bytes_max.min(Semaphore::MAX_PERMITS);
        Budgets {
            request: Arc::new(Semaphore::new(request_max)),
            request_max,
            reply: Arc::new(Semaphore::new(reply_max)),
            reply_max,
            reply_bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Request bytes held now.
    pub fn request_bytes(&self) -> usize {
        self.request_max.saturating_sub(self.request.available_permits())
    }

    /// Reply bytes held now (reserved or not yet written).
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes.load(Ordering::Relaxed)
    }

    /// `bytes` of request memory, without waiting if they are free. A
    /// request larger than the whole budget (`record_bytes_max` configured
    /// above it) takes the whole budget.
    pub fn try_request(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.request.clone().try_acquire_many_owned(permits(bytes.min(self.request_max))).ok()
    }

    /// `bytes` of request memory (at most the whole budget), once free
    /// (`None`: never, the budget closed).
    pub async fn request(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.request.clone().acquire_many_owned(permits(bytes.min(self.request_max))).await.ok()
    }

    /// Reserve the reply of one call of `conn` (its current estimate), once
    /// the node-wide budget has room.
    pub async fn reserve_reply(&self, conn: &Arc<ConnState>) -> Option<ReplyCharge> {
        let bytes = conn.reply_estimate().min(self.reply_max);
        let permit = self.reply.clone().acquire_many_owned(permits(bytes)).await.ok()?;
        let bytes = permit.num_permits();
        conn.add_reply_bytes(bytes);
        self.reply_bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(ReplyCharge {
            permit: Some(permit),
            bytes,
            conn: conn.clone(),
            gauge: self.reply_bytes.clone(),
            semaphore: self.reply.clone(),
        })
    }
}

/// Reply bytes charged to one connection and to the node until dropped.
pub struct ReplyCharge {
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    conn: Arc<ConnState>,
    gauge: Arc<AtomicUsize>,
    semaphore: Arc<Semaphore>,
}

impl ReplyCharge {
    /// The reply turned out to be `size` bytes: charge that instead.
    pub fn resize(&mut self, size: usize) {
        if size < self.bytes {
            let excess = self.bytes - size;
            if let Some(permit) = self.permit.as_mut() {
                drop(permit.split(excess.min(permit.num_permits())));
            }
            self.bytes = size;
            self.conn.sub_reply_bytes(excess);
            self.gauge.fetch_sub(excess, Ordering::Relaxed);
        } else if size > self.bytes {
            let extra = size - self.bytes;
            if let Ok(more) = self.semaphore.clone().try_acquire_many_owned(permits(extra)) {
                match self.permit.as_mut() {
                    Some(permit) => permit.merge(more),
                    None => self.permit = Some(more),
                }
            }
            self.bytes = size;
            self.conn.add_reply_bytes(extra);
            self.gauge.fetch_add(extra, Ordering::Relaxed);
        }
    }
}

impl Drop for ReplyCharge {
    fn drop(&mut self) {
        self.conn.sub_reply_bytes(self.bytes);
        self.gauge.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rpc::registry::ConnRegistry;

    #[tokio::test]
    async fn a_reply_charge_follows_the_reply_size_and_is_released() {
        let limits = Limits { reply_bytes_max: 4 << 20, ..Limits::default() };
        let budgets = Budgets::new(&limits);
        let registry = ConnRegistry::new(limits);
        let admitted = registry.admit("127.0.0.1:700".parse().unwrap(), |_| {}).ok().unwrap();
        let conn = admitted.guard.state.clone();
        let mut charge = budgets.reserve_reply(&conn).await.unwrap();
        let estimate = conn.reply_estimate();
        assert_eq!(budgets.reply_bytes(), estimate);
        assert_eq!(conn.reply_bytes(), estimate);
        charge.resize(100);
        assert_eq!((budgets.reply_bytes(), conn.reply_bytes()), (100, 100));
        charge.resize(3 << 20);
        assert_eq!(budgets.reply_bytes(), 3 << 20);
        drop(charge);
        assert_eq!((budgets.reply_bytes(), conn.reply_bytes()), (0, 0));
        // Every permit came back: the whole budget can be reserved again.
        assert!(tokio::time::timeout(Duration::from_secs(5), budgets.reply.acquire_many(4 << 20)).await.is_ok());
    }
}
