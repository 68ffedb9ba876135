//! The NFSv3 session of the scale tool: where the server is (`Target`), a TCP
//! transport that turns EOF into an error (nfs3_client's read loop would
//! otherwise spin on a closed socket), and `Session`, one connection whose
//! calls each run under a timeout. Only the calls the scale run makes:
//! READDIRPLUS, LOOKUP and GETATTR. (A trimmed copy of interop/bench's
//! client, which belongs to another crate.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::net::Connector;
use nfs3_client::nfs3_types::nfs3::{
    cookieverf3, diropargs3, entryplus3, fattr3, filename3, nfs_fh3, nfsstat3, GETATTR3args, LOOKUP3args, Nfs3Result,
    READDIRPLUS3args,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{Nfs3Client, Nfs3ConnectionBuilder, RpcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::ScaleError;

/// Machine name in the AUTH_SYS credential.
const MACHINE_NAME: &[u8] = b"hanfs-scale";

/// Where the server listens and what to mount. Calls are made as root
/// (uid 0, gid 0): the export is `no_root_squash`.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: IpAddr,
    pub portmap_port: u16,
    pub mount_port: u16,
    pub nfs_port: u16,
    pub export: String,
    /// Bound on every single call, connects and MNT included.
    pub rpc_timeout: Duration,
}

impl Target {
    fn credential(&self) -> opaque_auth<'static> {
        opaque_auth::auth_unix(&auth_unix {
            stamp: 1,
            machinename: Opaque::owned(MACHINE_NAME.to_vec()),
            uid: 0,
            gid: 0,
            gids: vec![0],
        })
    }

    /// MNT the export and return its root handle; the MOUNT connection is
    /// closed again, the NFS one kept.
    pub async fn mount(&self) -> Result<(nfs_fh3, Session), ScaleError> {
        let builder = Nfs3ConnectionBuilder::new(EofConnector, self.host.to_string(), &self.export)
            .portmapper_port(self.portmap_port)
            .mount_port(self.mount_port)
            .nfs3_port(self.nfs_port)
            .connect_from_privileged_port(false)
            .credential(self.credential());
        let conn = tokio::time::timeout(self.rpc_timeout, builder.mount())
            .await
            .map_err(|_| ScaleError::Timeout { op: "MNT" })?
            .map_err(|e| ScaleError::Connect(e.to_string()))?;
        let root = conn.root_nfs_fh3();
        Ok((root, Session::new(conn.into_nfs3_client(), self.rpc_timeout)))
    }

    /// One more NFS connection (no MNT).
    pub async fn session(&self) -> Result<Session, ScaleError> {
        let addr = SocketAddr::new(self.host, self.nfs_port);
        let io = tokio::time::timeout(self.rpc_timeout, EofConnector.connect(addr))
            .await
            .map_err(|_| ScaleError::Timeout { op: "connect" })?
            .map_err(|e| ScaleError::Connect(e.to_string()))?;
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

/// Connects with TCP_NODELAY.
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

/// One page of READDIRPLUS.
#[derive(Debug)]
pub struct DirPage {
    pub entries: Vec<entryplus3<'static>>,
    pub cookieverf: cookieverf3,
    pub eof: bool,
}

/// The outcome of one GETATTR: the server's status is data here, not an error.
pub type Getattr = Result<fattr3, nfsstat3>;

/// One NFSv3 connection. After a timeout or transport error the connection
/// state is unknown, so the session refuses further calls.
pub struct Session {
    client: Nfs3Client<EofIo>,
    rpc_timeout: Duration,
    broken: bool,
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
    ) -> Result<T, ScaleError> {
        if *broken {
            return Err(ScaleError::Broken { op });
        }
        match tokio::time::timeout(rpc_timeout, fut).await {
            Err(_) => {
                *broken = true;
                Err(ScaleError::Timeout { op })
            }
            Ok(Err(e)) => {
                *broken = true;
                Err(ScaleError::Rpc { op, detail: e.to_string() })
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    pub async fn getattr(&mut self, fh: &nfs_fh3) -> Result<Getattr, ScaleError> {
        let args = GETATTR3args { object: fh.clone() };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "GETATTR", self.client.getattr(&args)).await?;
        Ok(match res {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
            Nfs3Result::Err((status, _)) => Err(status),
        })
    }

    pub async fn lookup(&mut self, dir: &nfs_fh3, name: &[u8]) -> Result<nfs_fh3, ScaleError> {
        let what = diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(name.to_vec())) };
        let args = LOOKUP3args { what };
        let res = Self::guard(self.rpc_timeout, &mut self.broken, "LOOKUP", self.client.lookup(&args)).await?;
        match res {
            Nfs3Result::Ok(ok) => Ok(ok.object),
            Nfs3Result::Err((status, _)) => Err(ScaleError::Nfs { op: "LOOKUP", status: format!("{status:?}") }),
        }
    }

    pub async fn readdirplus(
        &mut self,
        dir: &nfs_fh3,
        cookie: u64,
        cookieverf: cookieverf3,
        count_bytes: u32,
    ) -> Result<DirPage, ScaleError> {
        let args =
            READDIRPLUS3args { dir: dir.clone(), cookie, cookieverf, dircount: count_bytes, maxcount: count_bytes };
        let res =
            Self::guard(self.rpc_timeout, &mut self.broken, "READDIRPLUS", self.client.readdirplus(&args)).await?;
        match res {
            Nfs3Result::Ok(ok) => {
                Ok(DirPage { entries: ok.reply.entries.into_inner(), cookieverf: ok.cookieverf, eof: ok.reply.eof })
            }
            Nfs3Result::Err((status, _)) => Err(ScaleError::Nfs { op: "READDIRPLUS", status: format!("{status:?}") }),
        }
    }
}
