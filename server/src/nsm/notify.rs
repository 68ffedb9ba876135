//! SM_NOTIFY from this server to its lock clients (classic recovery only,
//! `nlm::grace`): "the server named `mon_name` restarted, its NSM state is
//! now `state`", what nfs-utils `sm-notify` sends after knfsd starts. A
//! client's statd matches `mon_name` (or our address) against the servers it
//! monitors and tells its lockd, which reclaims its locks.
//!
//! Each client address gets one notice, at the port its portmapper gives
//! for NSM v1 over UDP, else TCP (the portmapper port is
//! `Ports::callback_portmap`, 111 in service), sent from the address clients
//! call (the VIP; `CallbackConfig::source`). statd answers with a void reply;
//! no reply, or no portmapper, is retried with exponential backoff, at most
//! `NOTIFY_ATTEMPTS_MAX` times per address, `NOTIFY_IN_FLIGHT_MAX` addresses
//! at once. The task stops with the active period.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use nfs3_types::portmap::{IPPROTO_TCP, IPPROTO_UDP};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::xdr::{SmString, StatChge};
use super::{SM_NOTIFY, SM_PROGRAM, SM_VERSION};
use crate::nlm::callback::CallbackConfig;
use crate::nlm::xdr::to_bytes;
use crate::portmap::client::getport;
use crate::rpc::client::{self, ClientError, Request};
use crate::rpc::program::{Cred, Transport};

/// Sends of one notice before giving up on that address.
pub const NOTIFY_ATTEMPTS_MAX: u32 = 6;
/// Wait before the second send; doubled after each, up to the maximum.
pub const NOTIFY_RETRY_FIRST_MS: u64 = 1_000;
pub const NOTIFY_RETRY_MAX_MS: u64 = 16_000;
/// How long one SM_NOTIFY waits for statd's reply.
pub const NOTIFY_CALL_TIMEOUT_MS: u64 = 2_000;
/// Addresses notified at once.
pub const NOTIFY_IN_FLIGHT_MAX: usize = 16;

const _: () = assert!(NOTIFY_RETRY_FIRST_MS <= NOTIFY_RETRY_MAX_MS);

/// What every notice says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Our name as clients monitor it (`ServerConfig::nsm_mon_name`).
    pub mon_name: String,
    /// Our NSM state after the bump (odd).
    pub state: u32,
}

/// Why one notice did not reach a client's statd.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("mon_name is longer than SM_MAXSTRLEN")]
    MonName,
    #[error("asking the client's portmapper: {0}")]
    Portmap(ClientError),
    #[error("the client's portmapper has no NSM v1")]
    NotRegistered,
    #[error("calling the client's statd: {0}")]
    Call(ClientError),
}

/// Notify every address in `addrs` (each retried, see the module doc);
/// returns when all are done or `stop` turns true.
pub async fn notify_all(
    config: Arc<CallbackConfig>,
    notice: Notice,
    addrs: Vec<IpAddr>,
    mut stop: watch::Receiver<bool>,
) {
    let args = match SmString::new(notice.mon_name.as_bytes().to_vec()) {
        Ok(mon_name) => Arc::new(to_bytes(&StatChge { mon_name, state: notice.state as i32 })),
        Err(_) => {
            tracing::warn!(error = %NotifyError::MonName, "nsm SM_NOTIFY not sent");
            return;
        }
    };
    tracing::info!(hosts = addrs.len(), mon_name = %notice.mon_name, state = notice.state, "nsm sending SM_NOTIFY to the lock clients");
    let mut pending = addrs.into_iter();
    let mut sends: JoinSet<()> = JoinSet::new();
    loop {
        while sends.len() < NOTIFY_IN_FLIGHT_MAX {
            let Some(addr) = pending.next() else { break };
            sends.spawn(notify_host(config.clone(), addr, args.clone(), notice.state));
        }
        if sends.is_empty() {
            return;
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = sends.join_next() => {}
        }
    }
    sends.abort_all();
    while sends.join_next().await.is_some() {}
}

/// One address, retried with backoff.
async fn notify_host(config: Arc<CallbackConfig>, addr: IpAddr, args: Arc<Vec<u8>>, state: u32) {
    for sent in 1..=NOTIFY_ATTEMPTS_MAX {
        match call_statd(&config, addr, &args).await {
            Ok(()) => {
                tracing::info!(%addr, state, "nsm SM_NOTIFY delivered");
                return;
            }
            Err(e) if sent == NOTIFY_ATTEMPTS_MAX => {
                tracing::warn!(%addr, attempts = sent, error = %e, "nsm SM_NOTIFY not delivered; giving up");
            }
            Err(e) => {
                tracing::debug!(%addr, attempt = sent, error = %e, "nsm SM_NOTIFY not delivered; retrying");
                tokio::time::sleep(Duration::from_millis(backoff_ms(sent))).await;
            }
        }
    }
}

/// Wait after the `sent`-th send: 1 s, 2 s, 4 s ... up to the maximum.
fn backoff_ms(sent: u32) -> u64 {
    crate::nlm::callback::backoff_ms(sent, NOTIFY_RETRY_FIRST_MS, NOTIFY_RETRY_MAX_MS)
}

/// One SM_NOTIFY to the statd of `host`, found through its portmapper.
async fn call_statd(config: &CallbackConfig, host: IpAddr, args: &[u8]) -> Result<(), NotifyError> {
    let portmapper = SocketAddr::new(host, config.portmap_port);
    let fence = &config.fence;
    let udp = getport(portmapper, SM_PROGRAM, SM_VERSION, IPPROTO_UDP, fence).await.map_err(NotifyError::Portmap)?;
    let (port, transport) = match udp {
        Some(port) => (port, Transport::Udp),
        None => {
            match getport(portmapper, SM_PROGRAM, SM_VERSION, IPPROTO_TCP, fence).await.map_err(NotifyError::Portmap)? {
                Some(port) => (port, Transport::Tcp),
                None => return Err(NotifyError::NotRegistered),
            }
        }
    };
    let cred = Cred::Sys { uid: 0, gid: 0, gids: Vec::new(), machine: config.machine.clone() };
    let req = Request {
        addr: SocketAddr::new(host, port),
        prog: SM_PROGRAM,
        vers: SM_VERSION,
        proc_: SM_NOTIFY,
        cred: &cred,
        args,
        transport,
        timeout: Duration::from_millis(NOTIFY_CALL_TIMEOUT_MS),
        attempts: 1,
        fence,
    };
    client::call_from(&req, config.source).await.map(|_| ()).map_err(NotifyError::Call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(u32::MAX), 16_000);
    }
}
