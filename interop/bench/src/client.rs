//! The connection to the server under test: where it is (`Target`), a TCP
//! transport that turns EOF into an error (nfs3_client's read loop would
//! otherwise spin on a closed socket), and `Session`, one NFSv3 connection
//! whose calls each run under a timeout and return checked results.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::nfs3::{
    cookieverf3, createhow3, diropargs3, fattr3, filename3, nfs_fh3, nfsstat3, sattr3, stable_how, writeverf3,
    COMMIT3args, CREATE3args, FSINFO3args, GETATTR3args, LOOKUP3args, MKDIR3args, Nfs3Option, Nfs3Result, READ3args,
    READDIRPLUS3args, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args, WRITE3args, WRITE3resok,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{Nfs3Client, Nfs3ConnectionBuilder, RpcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::BenchError;

/// Machine name in the AUTH_SYS credential.
const MACHINE_NAME: &[u8] = b"hanfs-bench";

/// Where the server under test listens and what to mount.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: IpAddr,
    pub portmap_port: u16,
    /// `None`: ask the portmapper.
    pub mount_port: Option<u16>,
    /// `None`: ask the portmapper.
    pub nfs_port: Option<u16>,
    pub export: String,
    pub uid: u32,
    pub gid: u32,
    /// Bind the client socket to a port below 1024 (needs root).
    pub privileged_port: bool,
    /// Bound on every single call, connects and MNT included.
    pub rpc_timeout: Duration,
}

/// A mounted export: the root handle and the resolved NFS port.
#[derive(Debug, Clone)]
pub struct Mounted {
    pub root: nfs_fh3,
    pub nfs_port: u16,
}

impl Target {
    /// AUTH_SYS with the target's uid and gid (one supplementary gid, the same).
    pub(crate) fn credential(&self) -> opaque_auth<'static> {
        opaque_auth::auth_unix(&auth_unix {
            stamp: 1,
            machinename: Opaque::owned(MACHINE_NAME.to_vec()),
            uid: self.uid,
            gid: self.gid,
            gids: vec![self.gid],
        })
    }

    fn connector(&self) -> EofConnector {
        EofConnector
    }

    /// MNT the export (portmap and MOUNT as configured) and open a session on
    /// the NFS port. The MOUNT connection is closed again.
    pub async fn mount(&self) -> Result<(Mounted, Session), BenchError> {
        let mut builder = Nfs3ConnectionBuilder::new(self.connector(), self.host.to_string(), &self.export)
            .portmapper_port(self.portmap_port)
            .connect_from_privileged_port(self.privileged_port)
            .credential(self.credential());
        if let Some(p) = self.mount_port {
            builder = builder.mount_port(p);
        }
        if let Some(p) = self.nfs_port {
            builder = builder.nfs3_port(p);
        }
        let conn = tokio::time::timeout(self.rpc_timeout, builder.mount())
            .await
            .map_err(|_| BenchError::Timeout { op: "MNT" })?
            .map_err(|e| BenchError::Connect(e.to_string()))?;
        let mounted = Mounted { root: conn.root_nfs_fh3(), nfs_port: conn.nfs3_port };
        let session = Session::new(conn.into_nfs3_client(), self.rpc_timeout);
        Ok((mounted, session))
    }

    /// One more NFS connection (no MNT) to an already mounted export.
    pub async fn session(&self, mounted: &Mounted) -> Result<Session, BenchError> {
        let addr = SocketAddr::new(self.host, mounted.nfs_port);
        let io = tokio::time::timeout(self.rpc_timeout, self.connector().connect(addr))
            .await
            .map_err(|_| BenchError::Timeout { op: "connect" })?
            .map_err(|e| BenchError::Connect(e.to_string()))?;
        let client = Nfs3Client::new_with_auth(io, self.credential(), opaque_auth::default());
        Ok(Session::new(client, self.rpc_timeout))
    }
}

/// A TCP stream whose reads report EOF as `UnexpectedEof` instead of `Ok(0)`.
pub struct EofIo(TcpStream);

impl AsyncRead for EofIo {
    async fn async_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf).await?;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
        Ok(n)
    }
}

impl AsyncWrite for EofIo {
    async fn async_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf).await?;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "server closed the connection"));
        }
        Ok(n)
    }
}

/// Connects with TCP_NODELAY (one RPC per round trip, as the kernel client).
pub struct EofConnector;

impl Connector for EofConnector {
    type Connection = EofIo;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<EofIo> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(EofIo(stream))
    }

    async fn connect_with_port(&self, addr: SocketAddr, local_port: u16) -> std::io::Result<EofIo> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        let local_ip = match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        socket.bind(SocketAddr::new(local_ip, local_port))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(EofIo(stream))
    }
}

/// Result of one WRITE.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub count: u32,
    pub committed: stable_how,
    pub verf: writeverf3,
}

impl From<WRITE3resok> for Written {
    fn from(ok: WRITE3resok) -> Self {
        Written { count: ok.count, committed: ok.committed, verf: ok.verf }
    }
}

/// WRITE's arguments for `data` at `offset` (both clients send the same).
pub(crate) fn write_args<'a>(
    fh: &nfs_fh3,
    offset: u64,
    data: &'a [u8],
    stable: stable_how,
) -> Result<WRITE3args<'a>, BenchError> {
    let count = u32::try_from(data.len()).map_err(|_| BenchError::Verify("write chunk over 4 GiB".into()))?;
    Ok(WRITE3args { file: fh.clone(), offset, count, stable, data: Opaque::borrowed(data) })
}

/// COMMIT's arguments: the whole file.
pub(crate) fn commit_args(fh: &nfs_fh3) -> COMMIT3args {
    COMMIT3args { file: fh.clone(), offset: 0, count: 0 }
}

/// One page of READDIRPLUS: entry names (with `.`/`..`), next cookie, eof.
#[derive(Debug)]
pub struct DirPage {
    pub names: Vec<Vec<u8>>,
    pub last_cookie: u64,
    pub cookieverf: cookieverf3,
    pub eof: bool,
}

/// One NFSv3 connection. After a timeout or transport error the connection
/// state is unknown, so the session refuses further calls.
pub struct Session {
    client: Nfs3Client<EofIo>,
    rpc_timeout: Duration,
    broken: bool,
}

fn dirop(dir: &nfs_fh3, name: &str) -> diropargs3<'static> {
    diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(name.as_bytes().to_vec())) }
}

fn nfs_err<T, E>(op: &'static str, res: Nfs3Result<T, E>) -> Result<T, BenchError> {
    match res {
        Nfs3Result::Ok(v) => Ok(v),
        Nfs3Result::Err((status, _)) => Err(BenchError::Nfs { op, status: status_name(status) }),
    }
}

/// `NFS3ERR_NOENT` etc., for error lines.
pub fn status_name(status: nfsstat3) -> String {
    format!("{status:?}")
}

impl Session {
    fn new(client: Nfs3Client<EofIo>, rpc_timeout: Duration) -> Session {
        Session { client, rpc_timeout, broken: false }
    }

    async fn guard<T>(
        rpc_timeout: Duration,
        broken: &mut bool,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, RpcError>>,
    ) -> Result<T, BenchError> {
        if *broken {
            return Err(BenchError::Broken { op });
        }
        match tokio::time::timeout(rpc_timeout, fut).await {
            Err(_) => {
                *broken = true;
                Err(BenchError::Timeout { op })
            }
            Ok(Err(e)) => {
                *broken = true;
                Err(BenchError::Rpc { op, detail: e.to_string() })
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    pub async fn getattr(&mut self, fh: &nfs_fh3) -> Result<fattr3, BenchError> {
        let args = GETATTR3args { object: fh.clone() };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "GETATTR", self.client.getattr(&args)).await?;
        nfs_err("GETATTR", res).map(|ok| ok.obj_attributes)
    }

    pub async fn lookup(&mut self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, BenchError> {
        let args = LOOKUP3args { what: dirop(dir, name) };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "LOOKUP", self.client.lookup(&args)).await?;
        nfs_err("LOOKUP", res).map(|ok| ok.object)
    }

    /// GUARDED create with mode 0644: fails with EXIST if the name is taken.
    pub async fn create(&mut self, dir: &nfs_fh3, name: &str) -> Result<Option<nfs_fh3>, BenchError> {
        let attrs = sattr3 { mode: Nfs3Option::Some(0o644), ..sattr3::default() };
        let args = CREATE3args { where_: dirop(dir, name), how: createhow3::GUARDED(attrs) };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "CREATE", self.client.create(&args)).await?;
        nfs_err("CREATE", res).map(|ok| match ok.obj {
            Nfs3Option::Some(fh) => Some(fh),
            Nfs3Option::None => None,
        })
    }

    /// CREATE, then LOOKUP when the server returned no handle.
    pub async fn create_handle(&mut self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, BenchError> {
        match self.create(dir, name).await? {
            Some(fh) => Ok(fh),
            None => self.lookup(dir, name).await,
        }
    }

    pub async fn remove(&mut self, dir: &nfs_fh3, name: &str) -> Result<(), BenchError> {
        let args = REMOVE3args { object: dirop(dir, name) };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "REMOVE", self.client.remove(&args)).await?;
        nfs_err("REMOVE", res).map(|_| ())
    }

    /// SETATTR of the mode only, no guard.
    pub async fn set_mode(&mut self, fh: &nfs_fh3, mode: u32) -> Result<(), BenchError> {
        let new_attributes = sattr3 { mode: Nfs3Option::Some(mode), ..sattr3::default() };
        let args = SETATTR3args { object: fh.clone(), new_attributes, guard: Nfs3Option::None };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "SETATTR", self.client.setattr(&args)).await?;
        nfs_err("SETATTR", res).map(|_| ())
    }

    /// RENAME within one directory.
    pub async fn rename(&mut self, dir: &nfs_fh3, from: &str, to: &str) -> Result<(), BenchError> {
        let args = RENAME3args { from: dirop(dir, from), to: dirop(dir, to) };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "RENAME", self.client.rename(&args)).await?;
        nfs_err("RENAME", res).map(|_| ())
    }

    pub async fn mkdir(&mut self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, BenchError> {
        let attrs = sattr3 { mode: Nfs3Option::Some(0o755), ..sattr3::default() };
        let args = MKDIR3args { where_: dirop(dir, name), attributes: attrs };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "MKDIR", self.client.mkdir(&args)).await?;
        match nfs_err("MKDIR", res)?.obj {
            Nfs3Option::Some(fh) => Ok(fh),
            Nfs3Option::None => self.lookup(dir, name).await,
        }
    }

    pub async fn rmdir(&mut self, dir: &nfs_fh3, name: &str) -> Result<(), BenchError> {
        let args = RMDIR3args { object: dirop(dir, name) };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "RMDIR", self.client.rmdir(&args)).await?;
        nfs_err("RMDIR", res).map(|_| ())
    }

    /// (rtmax, wtmax) from FSINFO.
    pub async fn fsinfo_max(&mut self, root: &nfs_fh3) -> Result<(u32, u32), BenchError> {
        let args = FSINFO3args { fsroot: root.clone() };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "FSINFO", self.client.fsinfo(&args)).await?;
        nfs_err("FSINFO", res).map(|ok| (ok.rtmax, ok.wtmax))
    }

    pub async fn write(
        &mut self,
        fh: &nfs_fh3,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Result<Written, BenchError> {
        let args = write_args(fh, offset, data, stable)?;
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "WRITE", self.client.write(&args)).await?;
        nfs_err("WRITE", res).map(Written::from)
    }

    /// COMMIT of the whole file; returns the verifier.
    pub async fn commit(&mut self, fh: &nfs_fh3) -> Result<writeverf3, BenchError> {
        let args = commit_args(fh);
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "COMMIT", self.client.commit(&args)).await?;
        nfs_err("COMMIT", res).map(|ok| ok.verf)
    }

    /// (data, eof)
    pub async fn read(&mut self, fh: &nfs_fh3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), BenchError> {
        let args = READ3args { file: fh.clone(), offset, count };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "READ", self.client.read(&args)).await?;
        nfs_err("READ", res).map(|ok| (ok.data.into_owned(), ok.eof))
    }

    pub async fn readdirplus(
        &mut self,
        dir: &nfs_fh3,
        cookie: u64,
        cookieverf: cookieverf3,
        dircount: u32,
        maxcount: u32,
    ) -> Result<DirPage, BenchError> {
        let args = READDIRPLUS3args { dir: dir.clone(), cookie, cookieverf, dircount, maxcount };
        let res =
            Self::guard(self.rpc_timeout, &mut self.broken, "READDIRPLUS", self.client.readdirplus(&args)).await?;
        let ok = nfs_err("READDIRPLUS", res)?;
        let entries = ok.reply.entries.into_inner();
        let last_cookie = entries.last().map_or(cookie, |e| e.cookie);
        let names = entries.into_iter().map(|e| e.name.0.into_owned()).collect();
        Ok(DirPage { names, last_cookie, cookieverf: ok.cookieverf, eof: ok.reply.eof })
    }
}
