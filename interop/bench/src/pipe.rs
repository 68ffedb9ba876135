//! A pipelined NFSv3 client on one TCP connection, for the throughput mode:
//! nfs3_client's `RpcClient` sends a call and then reads its reply, so it
//! holds one call in flight per connection. `Pipe` uses nfs3_types only for
//! the XDR of the messages: callers encode their call (record marking,
//! `rpc_msg` with AUTH_UNIX, the procedure's arguments) and write it under a
//! lock on the write half; one reader task cuts reply records and hands each
//! to the caller waiting on its xid. Any number of tasks may call at once,
//! as the kernel client keeps many slots on one connection. Every call runs
//! under the target's RPC timeout; after a timeout or a transport error the
//! pipe refuses further calls (its state is unknown).

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{
    self, cookieverf3, createhow3, diropargs3, filename3, nfs_fh3, sattr3, set_mode3, stable_how, writeverf3,
    COMMIT3res, CREATE3args, CREATE3res, GETATTR3args, GETATTR3res, LOOKUP3args, LOOKUP3res, Nfs3Option, Nfs3Result,
    READ3args, READ3res, READDIRPLUS3args, READDIRPLUS3res, REMOVE3args, REMOVE3res, RENAME3args, RENAME3res,
    SETATTR3args, SETATTR3res, WRITE3res, NFS_PROGRAM,
};
use nfs3_client::nfs3_types::rpc::{
    accept_stat_data, call_body, fragment_header, msg_body, opaque_auth, reply_body, rpc_msg, RPC_VERSION_2,
};
use nfs3_client::nfs3_types::xdr_codec::{Opaque, Pack, Unpack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{commit_args, status_name, write_args, DirPage, Mounted, Target, Written};
use crate::BenchError;

/// Largest reply record accepted (a READDIRPLUS page is at most its maxcount).
pub const REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Record-marking header length, bytes.
const HEADER_BYTES: usize = 4;

/// Replies not yet received, by xid; `broken` once the connection failed.
#[derive(Default)]
struct Pending {
    waiters: HashMap<u32, oneshot::Sender<Vec<u8>>>,
    broken: bool,
}

type Shared = Arc<Mutex<Pending>>;

/// One NFSv3 connection with any number of calls in flight.
pub struct Pipe {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Shared,
    next_xid: AtomicU32,
    credential: opaque_auth<'static>,
    rpc_timeout: Duration,
    reader: JoinHandle<()>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks the pipe broken and drops every waiter (their calls fail at once).
fn fail_all(p: &Shared) {
    let mut g = lock(p);
    g.broken = true;
    g.waiters.clear();
}

/// Reads one whole record (all its fragments); `None` on EOF, error or a
/// record over `REPLY_BYTES_MAX`.
async fn read_record(rd: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let mut record = Vec::new();
    loop {
        let mut head = [0u8; HEADER_BYTES];
        rd.read_exact(&mut head).await.ok()?;
        let header: fragment_header = head.into();
        let len = usize::try_from(header.fragment_length()).ok()?;
        if record.len().checked_add(len)? > REPLY_BYTES_MAX {
            return None;
        }
        let start = record.len();
        record.resize(start + len, 0);
        rd.read_exact(record.get_mut(start..)?).await.ok()?;
        if header.eof() {
            return Some(record);
        }
    }
}

/// Hands each reply to the caller waiting on its xid; replies nobody waits
/// for (a caller that timed out) are dropped.
async fn read_replies(mut rd: OwnedReadHalf, pending: Shared) {
    while let Some(record) = read_record(&mut rd).await {
        let Some(xid) = record.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
            break;
        };
        if let Some(tx) = lock(&pending).waiters.remove(&xid) {
            let _ = tx.send(record);
        }
    }
    fail_all(&pending);
}

fn dirop(dir: &nfs_fh3, name: &str) -> diropargs3<'static> {
    diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) }
}

fn nfs_ok<T, E>(op: &'static str, res: Nfs3Result<T, E>) -> Result<T, BenchError> {
    match res {
        Nfs3Result::Ok(v) => Ok(v),
        Nfs3Result::Err((status, _)) => Err(BenchError::Nfs { op, status: status_name(status) }),
    }
}

impl Pipe {
    /// Opens one more NFS connection (no MNT) to an already mounted export.
    pub async fn connect(target: &Target, mounted: &Mounted) -> Result<Pipe, BenchError> {
        let addr = SocketAddr::new(target.host, mounted.nfs_port);
        let stream = tokio::time::timeout(target.rpc_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| BenchError::Timeout { op: "connect" })?
            .map_err(|e| BenchError::Connect(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| BenchError::Connect(e.to_string()))?;
        let (rd, wr) = stream.into_split();
        let pending: Shared = Arc::default();
        let reader = tokio::spawn(read_replies(rd, Arc::clone(&pending)));
        Ok(Pipe {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_xid: AtomicU32::new(std::process::id().wrapping_mul(0x9E37_79B9)),
            credential: target.credential(),
            rpc_timeout: target.rpc_timeout,
            reader,
        })
    }

    fn encode<A: Pack>(&self, xid: u32, proc: NFS_PROGRAM, args: &A) -> Result<Vec<u8>, BenchError> {
        let msg = rpc_msg {
            xid,
            body: msg_body::CALL(call_body {
                rpcvers: RPC_VERSION_2,
                prog: nfs3::PROGRAM,
                vers: nfs3::VERSION,
                proc: proc as u32,
                cred: self.credential.borrow(),
                verf: opaque_auth::default(),
            }),
        };
        let len = msg.packed_size() + args.packed_size();
        let bad = |e: String| BenchError::Verify(format!("encoding a call: {e}"));
        let header = fragment_header::new(u32::try_from(len).map_err(|e| bad(e.to_string()))?, true);
        let mut buf = Vec::with_capacity(len + HEADER_BYTES);
        header.pack(&mut buf).map_err(|e| bad(e.to_string()))?;
        msg.pack(&mut buf).map_err(|e| bad(e.to_string()))?;
        args.pack(&mut buf).map_err(|e| bad(e.to_string()))?;
        Ok(buf)
    }

    /// One call: send, wait for the reply with the same xid, decode it.
    async fn call<A: Pack, R: Unpack>(&self, op: &'static str, proc: NFS_PROGRAM, args: &A) -> Result<R, BenchError> {
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed);
        let buf = self.encode(xid, proc, args)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut g = lock(&self.pending);
            if g.broken {
                return Err(BenchError::Broken { op });
            }
            g.waiters.insert(xid, tx);
        }
        let exchange = async {
            self.writer.lock().await.write_all(&buf).await.map_err(|e| e.to_string())?;
            rx.await.map_err(|_| "connection closed".to_string())
        };
        let record = match tokio::time::timeout(self.rpc_timeout, exchange).await {
            Ok(Ok(record)) => record,
            Ok(Err(detail)) => {
                fail_all(&self.pending);
                return Err(BenchError::Rpc { op, detail });
            }
            Err(_) => {
                fail_all(&self.pending);
                return Err(BenchError::Timeout { op });
            }
        };
        decode_reply(op, record)
    }

    pub async fn getattr(&self, fh: &nfs_fh3) -> Result<(), BenchError> {
        let res: GETATTR3res =
            self.call("GETATTR", NFS_PROGRAM::NFSPROC3_GETATTR, &GETATTR3args { object: fh.clone() }).await?;
        nfs_ok("GETATTR", res).map(|_| ())
    }

    pub async fn lookup(&self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, BenchError> {
        let args = LOOKUP3args { what: dirop(dir, name) };
        let res: LOOKUP3res = self.call("LOOKUP", NFS_PROGRAM::NFSPROC3_LOOKUP, &args).await?;
        nfs_ok("LOOKUP", res).map(|ok| ok.object)
    }

    /// GUARDED CREATE, mode 0644; the new handle (LOOKUP when the reply has none).
    pub async fn create(&self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, BenchError> {
        let attrs = sattr3 { mode: Nfs3Option::Some(0o644), ..sattr3::default() };
        let args = CREATE3args { where_: dirop(dir, name), how: createhow3::GUARDED(attrs) };
        let res: CREATE3res = self.call("CREATE", NFS_PROGRAM::NFSPROC3_CREATE, &args).await?;
        match nfs_ok("CREATE", res)?.obj {
            Nfs3Option::Some(fh) => Ok(fh),
            Nfs3Option::None => self.lookup(dir, name).await,
        }
    }

    /// SETATTR of the mode only, no guard.
    pub async fn set_mode(&self, fh: &nfs_fh3, mode: u32) -> Result<(), BenchError> {
        let new_attributes = sattr3 { mode: set_mode3::Some(mode), ..sattr3::default() };
        let args = SETATTR3args { object: fh.clone(), new_attributes, guard: Nfs3Option::None };
        let res: SETATTR3res = self.call("SETATTR", NFS_PROGRAM::NFSPROC3_SETATTR, &args).await?;
        nfs_ok("SETATTR", res).map(|_| ())
    }

    pub async fn rename(&self, dir: &nfs_fh3, from: &str, to: &str) -> Result<(), BenchError> {
        let args = RENAME3args { from: dirop(dir, from), to: dirop(dir, to) };
        let res: RENAME3res = self.call("RENAME", NFS_PROGRAM::NFSPROC3_RENAME, &args).await?;
        nfs_ok("RENAME", res).map(|_| ())
    }

    pub async fn remove(&self, dir: &nfs_fh3, name: &str) -> Result<(), BenchError> {
        let args = REMOVE3args { object: dirop(dir, name) };
        let res: REMOVE3res = self.call("REMOVE", NFS_PROGRAM::NFSPROC3_REMOVE, &args).await?;
        nfs_ok("REMOVE", res).map(|_| ())
    }

    pub async fn write(
        &self,
        fh: &nfs_fh3,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<Written, BenchError> {
        let args = write_args(fh, offset, data, stable)?;
        let res: WRITE3res = self.call("WRITE", NFS_PROGRAM::NFSPROC3_WRITE, &args).await?;
        nfs_ok("WRITE", res).map(Written::from)
    }

    /// COMMIT of the whole file; returns the verifier.
    pub async fn commit(&self, fh: &nfs_fh3) -> Result<writeverf3, BenchError> {
        let res: COMMIT3res = self.call("COMMIT", NFS_PROGRAM::NFSPROC3_COMMIT, &commit_args(fh)).await?;
        nfs_ok("COMMIT", res).map(|ok| ok.verf)
    }

    /// (data, eof)
    pub async fn read(&self, fh: &nfs_fh3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), BenchError> {
        let args = READ3args { file: fh.clone(), offset, count };
        let res: READ3res = self.call("READ", NFS_PROGRAM::NFSPROC3_READ, &args).await?;
        nfs_ok("READ", res).map(|ok| (ok.data.into_owned(), ok.eof))
    }

    pub async fn readdirplus(
        &self,
        dir: &nfs_fh3,
        cookie: u64,
        cookieverf: cookieverf3,
        count: u32,
    ) -> Result<DirPage, BenchError> {
        let args = READDIRPLUS3args { dir: dir.clone(), cookie, cookieverf, dircount: count, maxcount: count };
        let res: READDIRPLUS3res = self.call("READDIRPLUS", NFS_PROGRAM::NFSPROC3_READDIRPLUS, &args).await?;
        let ok = nfs_ok("READDIRPLUS", res)?;
        let entries = ok.reply.entries.into_inner();
        let last_cookie = entries.last().map_or(cookie, |e| e.cookie);
        let names = entries.into_iter().map(|e| e.name.0.into_owned()).collect();
        Ok(DirPage { names, last_cookie, cookieverf: ok.cookieverf, eof: ok.reply.eof })
    }
}

/// Checks the reply header (accepted, SUCCESS) and decodes the result.
fn decode_reply<R: Unpack>(op: &'static str, record: Vec<u8>) -> Result<R, BenchError> {
    let total = record.len() as u64;
    let mut cursor = Cursor::new(record);
    let rpc = |detail: String| BenchError::Rpc { op, detail };
    let (msg, _) = rpc_msg::unpack(&mut cursor).map_err(|e| rpc(format!("reply header: {e}")))?;
    match msg.body {
        msg_body::REPLY(reply_body::MSG_ACCEPTED(accepted)) => match accepted.reply_data {
            accept_stat_data::SUCCESS => {}
            other => return Err(rpc(format!("call not executed: {other:?}"))),
        },
        msg_body::REPLY(reply_body::MSG_DENIED(denied)) => return Err(rpc(format!("call denied: {denied:?}"))),
        msg_body::CALL(_) => return Err(rpc("a CALL where a reply was expected".into())),
    }
    let (value, _) = R::unpack(&mut cursor).map_err(|e| rpc(format!("reply body: {e}")))?;
    if cursor.position() != total {
        return Err(rpc(format!("{} bytes left after the reply", total - cursor.position())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs3_client::nfs3_types::nfs3::nfsstat3;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// NFS3ERR_STALE and NFS3ERR_BADHANDLE, as on the wire.
    const STALE: u32 = 70;
    const BADHANDLE: u32 = 10001;

    /// A reply record: accepted, SUCCESS, then a bare nfsstat3 (a failed GETATTR).
    fn reply(xid: u32, status: u32) -> Vec<u8> {
        let words = [xid, 1, 0, 0, 0, 0, status];
        let mut out = (0x8000_0000u32 | (words.len() as u32 * 4)).to_be_bytes().to_vec();
        for w in words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    async fn read_call(conn: &mut TcpStream) -> u32 {
        let mut head = [0u8; 4];
        conn.read_exact(&mut head).await.expect("call header");
        let len = (u32::from_be_bytes(head) & 0x7FFF_FFFF) as usize;
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await.expect("call body");
        u32::from_be_bytes(body[..4].try_into().expect("xid"))
    }

    fn target(port: u16) -> (Target, Mounted) {
        let target = Target {
            host: "127.0.0.1".parse().expect("address"),
            portmap_port: 111,
            mount_port: None,
            nfs_port: Some(port),
            export: "/export".into(),
            uid: 0,
            gid: 0,
            privileged_port: false,
            rpc_timeout: Duration::from_secs(10),
        };
        (target, Mounted { root: nfs_fh3::default(), nfs_port: port })
    }

    #[tokio::test]
    async fn replies_in_reverse_order_reach_their_callers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (got_first, mut first_seen) = mpsc::channel(1);
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let a = read_call(&mut conn).await;
            got_first.send(()).await.expect("notify");
            let b = read_call(&mut conn).await;
            conn.write_all(&reply(b, BADHANDLE)).await.expect("reply b");
            conn.write_all(&reply(a, STALE)).await.expect("reply a");
            // Then close: a later call must fail, not hang.
        });
        let (t, m) = target(port);
        let pipe = Arc::new(Pipe::connect(&t, &m).await.expect("connect"));
        let p = Arc::clone(&pipe);
        let first = tokio::spawn(async move { p.getattr(&nfs_fh3::default()).await });
        first_seen.recv().await.expect("server saw the first call");
        let second = pipe.getattr(&nfs_fh3::default()).await;
        let first = first.await.expect("join");
        let status = |r: Result<(), BenchError>| match r {
            Err(BenchError::Nfs { status, .. }) => status,
            other => panic!("expected an NFS error, got {other:?}"),
        };
        assert_eq!(status(first), status_name(nfsstat3::NFS3ERR_STALE));
        assert_eq!(status(second), status_name(nfsstat3::NFS3ERR_BADHANDLE));
        server.await.expect("server");
        assert!(pipe.getattr(&nfs_fh3::default()).await.is_err());
        assert!(matches!(pipe.getattr(&nfs_fh3::default()).await, Err(BenchError::Broken { .. })));
    }
}
