//! Exactly once across a crash (DESIGN.md invariant 6, issue 11 item 0): the
//! real `hanfs-server` binary runs with `HANFS_TEST_FAULTS=1` and
//! `HANFS_TEST_CRASH_AFTER_EXECUTE=<procedure>`, so it aborts right after the
//! procedure ran on the disk and before its reply was recorded. The node is
//! restarted on the same state directory and the same call (same xid, same
//! source address, same credential) is sent again: it must get the original's
//! answer (NFS3_OK, with the same handle where one is returned), not the
//! EEXIST or ENOENT of running it twice. One test per non-idempotent NFSv3
//! procedure (CREATE in all three modes). Also: the DRC key carries the
//! credential, so another uid replaying a cached call is not answered from
//! the cache (issue 11 item 7).

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nfs3_client::tokio::TokioConnector;
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{Opaque, Pack};

use crate::nfs3_ops::*;
use crate::util::*;

const NFS_PROGRAM: u32 = 100_003;
const NFS_VERSION: u32 = 3;
const MOUNT_PROGRAM: u32 = 100_005;
const MOUNT_VERSION: u32 = 3;
/// NFSv3 procedure numbers (RFC 1813).
const SETATTR: u32 = 2;
pub(crate) const CREATE: u32 = 8;
const MKDIR: u32 = 9;
const SYMLINK: u32 = 10;
const MKNOD: u32 = 11;
pub(crate) const REMOVE: u32 = 12;
const RMDIR: u32 = 13;
const RENAME: u32 = 14;
const LINK: u32 = 15;
/// nfsstat3 values checked on the wire.
pub(crate) const NFS3_OK: u32 = 0;
const NFS3ERR_EXIST: u32 = 17;
/// The test fault's environment variable (read with HANFS_TEST_FAULTS=1).
pub(crate) const CRASH_ENV: &str = "HANFS_TEST_CRASH_AFTER_EXECUTE";
/// The xid of every call under test (each test has its own state).
pub(crate) const XID: u32 = 0x0e0c_0001;
/// Polls while waiting for the binary to answer or to exit: 20 s.
const POLLS_MAX: u32 = 400;
const POLL_MS: u64 = 50;
/// Connect timeout of a readiness probe.
const PROBE_TIMEOUT_MS: u64 = 500;
/// Lines of the server's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// The real binary on 127.0.0.1, one export, fixed ports so that a restart
/// answers where the client sends; killed on drop.
struct Server {
    child: Option<Child>,
    export: PathBuf,
    state: PathBuf,
    log: PathBuf,
    portmap: u16,
    nfs: u16,
    mount: u16,
    /// The temp dir holding everything above.
    root: PathBuf,
    _tmp: TempDir,
}

impl Server {
    /// Start with the crash fault armed for procedure `crash` (e.g. "CREATE").
    fn start(label: &str, crash: &str) -> Server {
        init_tracing();
        let root = tempdir(&format!("once-{label}"));
        let export = root.path().join("export");
        let state = root.path().join("state");
        std::fs::create_dir_all(&export).expect("export dir");
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o777)).expect("chmod export");
        let log = root.path().join("server.log");
        let mut s = Server {
            child: None,
            export,
            state,
            log,
            portmap: free_port(),
            nfs: free_port(),
            mount: free_port(),
            root: root.path().to_path_buf(),
            _tmp: root,
        };
        s.spawn(Some(crash));
        s
    }

    fn spawn(&mut self, crash: Option<&str>) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        let mut cmd = Command::new(server_binary());
        cmd.args(["run", "--export"])
            .arg(&self.export)
            .args(["--clients", RW_NO_SQUASH, "--listen", "127.0.0.1"])
            .args(["--portmap-port", &self.portmap.to_string()])
            .args(["--nfs-port", &self.nfs.to_string()])
            .args(["--mount-port", &self.mount.to_string()])
            .arg("--state-dir")
            .arg(&self.state)
            .env("HANFS_TEST_FAULTS", "1")
            .env_remove(CRASH_ENV)
            // A core dump of the deliberate abort, if any, lands in the temp dir.
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log));
        if let Some(name) = crash {
            cmd.env(CRASH_ENV, name);
        }
        self.child = Some(cmd.spawn().expect("start hanfs-server"));
        self.wait_ready();
    }

    fn null_answers(&self, port: u16, prog: u32, vers: u32) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(PROBE_TIMEOUT_MS)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS)));
        let call = frame(&call_msg(0x5eed, prog, vers, 0, CRED_NONE, &[]));
        std::io::Write::write_all(&mut s, &call).is_ok()
            && read_record(&mut s).is_some_and(|r| matches!(parse_reply(&r), RpcReply::Accepted { stat: SUCCESS, .. }))
    }

    fn wait_ready(&mut self) {
        for _ in 0..POLLS_MAX {
            if self.null_answers(self.nfs, NFS_PROGRAM, NFS_VERSION)
                && self.null_answers(self.mount, MOUNT_PROGRAM, MOUNT_VERSION)
            {
                return;
            }
            let exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(!exited, "hanfs-server exited at start");
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        panic!("hanfs-server did not answer NULL within {} ms", u64::from(POLLS_MAX) * POLL_MS);
    }

    /// Wait (bounded) for the process to end by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else { panic!("no server process") };
        for _ in 0..POLLS_MAX {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("hanfs-server did not exit after the crash point");
    }

    /// Mount `/export` as root (AUTH_SYS 0/0).
    async fn connect(&self) -> Conn {
        Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", EXPORT_NAME)
            .portmapper_port(self.portmap)
            .mount_port(self.mount)
            .nfs3_port(self.nfs)
            .credential(auth_sys(0, 0, &[]))
            .mount()
            .await
            .expect("mount /export")
    }

    /// Send `proc_(args)` once: the node must abort at the crash point
    /// without answering. Restart it without the fault on the same state,
    /// send the same call again (same xid, address and credential), and
    /// return the body of its answer.
    fn crash_and_retransmit(&mut self, proc_: u32, args: &[u8]) -> Vec<u8> {
        self.crash_then_retransmit(proc_, args, |_| {})
    }

    /// `crash_and_retransmit`, with `between` run on the disk while the node
    /// is down (to leave what a crash at another point would have left).
    fn crash_then_retransmit(&mut self, proc_: u32, args: &[u8], between: impl FnOnce(&Server)) -> Vec<u8> {
        let cred = auth_sys_body(0, 0, &[]);
        let msg = call_msg(XID, NFS_PROGRAM, NFS_VERSION, proc_, (1, &cred), args);
        let first = tcp_call(self.nfs, &msg);
        assert!(first.is_none(), "the first call must not be answered: the node aborts after executing it");
        let status = self.wait_exit();
        assert_eq!(status.signal(), Some(libc::SIGABRT), "the node aborted at the crash point: {status:?}");
        between(self);
        self.spawn(None);
        let reply = tcp_call(self.nfs, &msg).expect("the restarted node answers the retransmission");
        match parse_reply(&reply) {
            RpcReply::Accepted { xid, stat: SUCCESS, body } => {
                assert_eq!(xid, XID, "reply xid");
                body
            }
            other => panic!("retransmission not accepted: {other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            println!("---- hanfs-server log (last {} lines) ----", lines.len() - from);
            for l in &lines[from..] {
                println!("{l}");
            }
        }
    }
}

pub(crate) fn pack<T: Pack>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.pack(&mut out).expect("pack arguments");
    out
}

/// The nfsstat3 at the start of a result body.
pub(crate) fn status(body: &[u8]) -> u32 {
    words(body).first().copied().expect("result status")
}

/// The handle of a CREATE/MKDIR/SYMLINK/MKNOD resok body (post_op_fh3 first).
pub(crate) fn returned_handle(body: &[u8]) -> Vec<u8> {
    let w = words(body);
    assert_eq!(w.get(1), Some(&1), "resok carries a handle");
    let len = w[2] as usize;
    body[12..12 + len].to_vec()
}

/// Assert an OK create-type answer whose handle is what LOOKUP of `n` gives.
async fn assert_created(s: &Server, body: &[u8], n: &str, what: &str) {
    assert_eq!(status(body), NFS3_OK, "{what}: the retransmission gets the original NFS3_OK");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (fh, _) = lookup(&mut c, &root, n).await.unwrap_or_else(|e| panic!("{what}: LOOKUP {n}: {e:?}"));
    assert_eq!(returned_handle(body), fh.data.as_ref(), "{what}: the answer carries the object's handle");
}

async fn create_case(label: &str, n: &str, how: createhow3) {
    let mut s = Server::start(label, "CREATE");
    let root = s.connect().await.root_nfs_fh3();
    let body = s.crash_and_retransmit(CREATE, &pack(&CREATE3args { where_: diropargs(&root, n), how }));
    assert_created(&s, &body, n, label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_create_unchecked() {
    create_case("create-unchecked", "u", createhow3::UNCHECKED(mode_attr(0o644))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_create_guarded() {
    create_case("create-guarded", "g", createhow3::GUARDED(mode_attr(0o644))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_create_exclusive() {
    create_case("create-exclusive", "x", createhow3::EXCLUSIVE(createverf3(*b"once-vrf"))).await;
}

/// The seconds an EXCLUSIVE create stores as mtime for `verf` (`proc_dir::verf_times`).
fn verifier_mtime(verf: &[u8; 8]) -> i64 {
    i64::from(u32::from_be_bytes([verf[0], verf[1], verf[2], verf[3]]) & 0x7fff_ffff)
}

/// A kill between making an EXCLUSIVE file and storing the verifier in its
/// times leaves an empty 0600 file with the clock's times (the kernel
/// client's `create: File exists` that killloop once saw): the
/// retransmission still gets the original's NFS3_OK, and the verifier is
/// stored now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_create_exclusive_interrupted_before_the_verifier() {
    let verf = *b"half-vrf";
    let mut s = Server::start("create-exclusive-half", "CREATE");
    let root = s.connect().await.root_nfs_fh3();
    let args = CREATE3args { where_: diropargs(&root, "h"), how: createhow3::EXCLUSIVE(createverf3(verf)) };
    let body = s.crash_then_retransmit(CREATE, &pack(&args), |s| {
        let now = std::time::SystemTime::now();
        let f = std::fs::File::options().write(true).open(s.export.join("h")).expect("the original made the file");
        f.set_times(std::fs::FileTimes::new().set_accessed(now).set_modified(now)).expect("undo the verifier");
    });
    assert_created(&s, &body, "h", "EXCLUSIVE interrupted before its verifier").await;
    let md = std::fs::metadata(s.export.join("h")).expect("h");
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&md), verifier_mtime(&verf), "the verifier is stored now");
}

/// The other side: an empty 0600 file that was there before the intent (the
/// original answered EXIST) is not taken for a half-made one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_create_exclusive_over_an_older_file_stays_exist() {
    let mut s = Server::start("create-exclusive-old", "CREATE");
    let older = s.export.join("o");
    std::fs::write(&older, b"").expect("older file");
    std::fs::set_permissions(&older, std::fs::Permissions::from_mode(0o600)).expect("0600");
    // Well past the recovery's slack between the intent's time and a ctime.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let root = s.connect().await.root_nfs_fh3();
    let args = CREATE3args { where_: diropargs(&root, "o"), how: createhow3::EXCLUSIVE(createverf3(*b"late-vrf")) };
    let body = s.crash_and_retransmit(CREATE, &pack(&args));
    assert_eq!(status(&body), NFS3ERR_EXIST, "the file was there before the call: EXIST, as the original answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_mkdir() {
    let mut s = Server::start("mkdir", "MKDIR");
    let root = s.connect().await.root_nfs_fh3();
    let args = MKDIR3args { where_: diropargs(&root, "d"), attributes: mode_attr(0o755) };
    let body = s.crash_and_retransmit(MKDIR, &pack(&args));
    assert_created(&s, &body, "d", "MKDIR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_symlink() {
    let mut s = Server::start("symlink", "SYMLINK");
    let root = s.connect().await.root_nfs_fh3();
    let args = SYMLINK3args {
        where_: diropargs(&root, "l"),
        symlink: symlinkdata3 {
            symlink_attributes: sattr3::default(),
            symlink_data: nfspath3(Opaque::borrowed(b"some/target")),
        },
    };
    let body = s.crash_and_retransmit(SYMLINK, &pack(&args));
    assert_created(&s, &body, "l", "SYMLINK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_mknod() {
    let mut s = Server::start("mknod", "MKNOD");
    let root = s.connect().await.root_nfs_fh3();
    let args = MKNOD3args { where_: diropargs(&root, "fifo"), what: mknoddata3::NF3FIFO(mode_attr(0o644)) };
    let body = s.crash_and_retransmit(MKNOD, &pack(&args));
    assert_created(&s, &body, "fifo", "MKNOD").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_link() {
    let mut s = Server::start("link", "LINK");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let src = create(&mut c, &root, "src").await.expect("create src");
    drop(c);
    let args = LINK3args { file: src.clone(), link: diropargs(&root, "lnk") };
    let body = s.crash_and_retransmit(LINK, &pack(&args));
    assert_eq!(status(&body), NFS3_OK, "LINK: the retransmission gets the original NFS3_OK, not EEXIST");
    let mut c = s.connect().await;
    let (_, linked) = lookup(&mut c, &root, "lnk").await.expect("LOOKUP lnk");
    let original = getattr(&mut c, &src).await.expect("GETATTR src");
    assert_eq!(linked.fileid, original.fileid, "the new name is the source object");
    assert_eq!(original.nlink, 2, "linked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_remove() {
    let mut s = Server::start("remove", "REMOVE");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    create(&mut c, &root, "victim").await.expect("create victim");
    drop(c);
    let body = s.crash_and_retransmit(REMOVE, &pack(&REMOVE3args { object: diropargs(&root, "victim") }));
    assert_eq!(status(&body), NFS3_OK, "REMOVE: the retransmission gets the original NFS3_OK, not NOENT");
    assert!(!s.export.join("victim").exists(), "the file is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_rmdir() {
    let mut s = Server::start("rmdir", "RMDIR");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    mkdir(&mut c, &root, "vdir").await.expect("mkdir vdir");
    drop(c);
    let body = s.crash_and_retransmit(RMDIR, &pack(&RMDIR3args { object: diropargs(&root, "vdir") }));
    assert_eq!(status(&body), NFS3_OK, "RMDIR: the retransmission gets the original NFS3_OK, not NOENT");
    assert!(!s.export.join("vdir").exists(), "the directory is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_rename() {
    let mut s = Server::start("rename", "RENAME");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "from").await.expect("create from");
    drop(c);
    let args = RENAME3args { from: diropargs(&root, "from"), to: diropargs(&root, "to") };
    let body = s.crash_and_retransmit(RENAME, &pack(&args));
    assert_eq!(status(&body), NFS3_OK, "RENAME: the retransmission gets the original NFS3_OK, not NOENT");
    let mut c = s.connect().await;
    let (moved, _) = lookup(&mut c, &root, "to").await.expect("LOOKUP to");
    assert_eq!(moved.data.as_ref(), fh.data.as_ref(), "the renamed file keeps its handle");
    assert!(getattr(&mut c, &fh).await.is_ok(), "the old handle still resolves");
    assert!(!s.export.join("from").exists(), "the source name is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_guarded_setattr() {
    let mut s = Server::start("setattr", "SETATTR");
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let fh = create(&mut c, &root, "attr").await.expect("create attr");
    let before = getattr(&mut c, &fh).await.expect("GETATTR attr");
    drop(c);
    let args =
        SETATTR3args { object: fh.clone(), new_attributes: mode_attr(0o600), guard: Nfs3Option::Some(before.ctime) };
    let body = s.crash_and_retransmit(SETATTR, &pack(&args));
    assert_eq!(status(&body), NFS3_OK, "guarded SETATTR: the retransmission gets the original NFS3_OK, not NOT_SYNC");
    let mut c = s.connect().await;
    let after = getattr(&mut c, &fh).await.expect("GETATTR attr");
    assert_eq!(after.mode & 0o7777, 0o600, "the mode was set");
}

/// CREATE GUARDED of `n` in `dir` as `uid` with xid `XID`, over TCP: the result body.
fn create_as(port: u16, uid: u32, dir: &nfs_fh3, n: &str) -> Vec<u8> {
    let cred = auth_sys_body(uid, uid, &[]);
    let args = pack(&CREATE3args { where_: diropargs(dir, n), how: createhow3::GUARDED(mode_attr(0o644)) });
    let reply = tcp_call(port, &call_msg(XID, NFS_PROGRAM, NFS_VERSION, CREATE, (1, &cred), &args)).expect("answer");
    match parse_reply(&reply) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => body,
        other => panic!("CREATE not accepted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drc_key_carries_the_credential() {
    let export = tempdir("once-cred");
    std::fs::set_permissions(export.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod export");
    let server = TestServer::start(export.path(), RW_NO_SQUASH);
    let root = server.connect().await.root_nfs_fh3();
    let first = create_as(server.nfs_port, 1000, &root, "mine");
    assert_eq!(status(&first), NFS3_OK, "uid 1000 creates the file");
    let replay = create_as(server.nfs_port, 1000, &root, "mine");
    assert_eq!(replay, first, "the same caller's retransmission is answered from the cache");
    let stranger = create_as(server.nfs_port, 2000, &root, "mine");
    assert_eq!(
        status(&stranger),
        NFS3ERR_EXIST,
        "another uid with the same xid and arguments is executed, not replayed"
    );
}
