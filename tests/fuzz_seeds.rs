//! The fuzz targets' seed inputs (`tests/fuzz/seeds/<target>/`): one valid
//! encoding of every procedure's arguments (and of each peer frame kind), in
//! the input layout of `hanfs_server::fuzzing` / `hanfs_raft::fuzzing`.
//! `fuzz_replay` checks that they decode and writes them out on request.

/// An XDR encoder for building seeds by hand.
#[derive(Default)]
struct X(Vec<u8>);

impl X {
    /// A dispatcher input: `[proc, flags]`, then the arguments.
    fn call(proc_: u8, flags: u8) -> X {
        X(vec![proc_, flags])
    }

    /// A decode-only input: `[proc]`, then the arguments.
    fn proc_(proc_: u8) -> X {
        X(vec![proc_])
    }

    fn u(mut self, w: u32) -> X {
        self.0.extend_from_slice(&w.to_be_bytes());
        self
    }

    fn h(self, w: u64) -> X {
        self.u((w >> 32) as u32).u(w as u32)
    }

    fn fixed(mut self, b: &[u8]) -> X {
        self.0.extend_from_slice(b);
        self.0.resize(self.0.len() + (4 - b.len() % 4) % 4, 0);
        self
    }

    fn op(self, b: &[u8]) -> X {
        self.u(b.len() as u32).fixed(b)
    }

    /// A file handle of the length the server issues (its MAC cannot match).
    fn fh(self) -> X {
        self.op(&[0x11; 40])
    }

    fn dirop(self, name: &[u8]) -> X {
        self.fh().op(name)
    }

    /// sattr3: mode 0644, uid and gid unset, size 0, atime server, mtime client.
    fn sattr(self) -> X {
        self.u(1).u(0o644).u(0).u(0).u(1).h(0).u(1).u(2).u(1_700_000_000).u(0)
    }

    /// nlm4_lock: caller_name, fh, oh, svid, offset, length.
    fn nlm_lock(self) -> X {
        self.op(b"client").fh().op(b"owner-1").u(42).h(0).h(100)
    }

    /// my_id: name, prog, vers, proc.
    fn my_id(self) -> X {
        self.op(b"localhost").u(100_021).u(4).u(16)
    }

    fn done(self) -> Vec<u8> {
        self.0
    }
}

/// `flags` of a dispatcher input (see `hanfs_server::fuzzing`).
const UDP: u8 = 1;
const REMOTE: u8 = 1 << 1;
const HIGH_PORT: u8 = 1 << 2;
const AUTH_NONE: u8 = 1 << 3;
const ROOT: u8 = 1 << 4;
const MOUNT_V1: u8 = 1 << 5;

/// Every seed: (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, name.to_owned(), bytes));
    let c = X::call;

    // Record marking: [bound, chunk, stream]: one record, and two fragments.
    let one = [&[0x80u8, 0, 0, 8][..], b"abcdefgh"].concat();
    add("rpc_record", "one_fragment", [&[255u8, 3][..], &one].concat());
    let two = [&[0u8, 0, 0, 2][..], b"ab", &[0x80, 0, 0, 3], b"cde\0", &one].concat();
    add("rpc_record", "two_fragments", [&[4u8, 5][..], &two].concat());

    // Call headers: AUTH_NONE and AUTH_SYS with two groups.
    let header = X::default().u(7).u(0).u(2).u(100_003).u(3).u(1);
    add("rpc_call", "auth_none", X(header.0.clone()).u(0).u(0).u(0).u(0).fh().done());
    let sys = X::default().u(1).op(b"client").u(1000).u(100).u(2).u(100).u(10).done();
    add("rpc_call", "auth_sys", X(header.0).u(1).op(&sys).u(0).u(0).fh().done());

    let nfs = [
        ("null", c(0, 0)),
        ("getattr", c(1, 0).fh()),
        ("setattr", c(2, 0).fh().sattr().u(1).u(1_700_000_000).u(0)),
        ("lookup", c(3, AUTH_NONE).dirop(b"file")),
        ("access", c(4, 0).fh().u(0x3f)),
        ("readlink", c(5, 0).fh()),
        ("read", c(6, UDP).fh().h(0).u(4096)),
        ("write", c(7, 0).fh().h(0).u(5).u(2).op(b"hello")),
        ("create_unchecked", c(8, 0).dirop(b"file").u(0).sattr()),
        ("create_guarded", c(8, ROOT).dirop(b"file").u(1).sattr()),
        ("create_exclusive", c(8, 0).dirop(b"file").u(2).fixed(&[7; 8])),
        ("mkdir", c(9, 0).dirop(b"dir").sattr()),
        ("symlink", c(10, 0).dirop(b"link").sattr().op(b"../target")),
        ("mknod_chr", c(11, 0).dirop(b"dev").u(4).sattr().u(1).u(3)),
        ("mknod_fifo", c(11, 0).dirop(b"fifo").u(7).sattr()),
        ("remove", c(12, HIGH_PORT).dirop(b"file")),
        ("rmdir", c(13, 0).dirop(b"dir")),
        ("rename", c(14, 0).dirop(b"a").dirop(b"b")),
        ("link", c(15, 0).fh().dirop(b"hard")),
        ("readdir", c(16, 0).fh().h(0).fixed(&[0; 8]).u(8192)),
        ("readdirplus", c(17, REMOTE).fh().h(0).fixed(&[0; 8]).u(4096).u(32768)),
        ("fsstat", c(18, 0).fh()),
        ("fsinfo", c(19, 0).fh()),
        ("pathconf", c(20, 0).fh()),
        ("commit", c(21, 0).fh().h(0).u(0)),
    ];
    for (name, x) in nfs {
        add("nfs3", name, x.done());
    }

    let mount = [
        ("null", c(0, 0)),
        ("mnt", c(1, 0).op(b"/srv/export")),
        ("mnt_v1", c(1, MOUNT_V1).op(b"/srv/export")),
        ("dump", c(2, UDP)),
        ("umnt", c(3, 0).op(b"/srv/export")),
        ("umntall", c(4, 0)),
        ("export", c(5, MOUNT_V1 | UDP)),
    ];
    for (name, x) in mount {
        add("mount", name, x.done());
    }

    let mapping = |x: X| x.u(100_003).u(3).u(6).u(2049);
    let portmap = [
        ("null", c(0, 0)),
        ("set", mapping(c(1, 0))),
        ("set_refused", mapping(c(1, HIGH_PORT))),
        ("unset", mapping(c(2, 0))),
        ("getport", mapping(c(3, REMOTE))),
        ("dump_udp", c(4, UDP)),
        ("callit", c(5, UDP).u(100_003).u(3).u(0).op(b"")),
    ];
    for (name, x) in portmap {
        add("portmap", name, x.done());
    }

    let p = X::proc_;
    let testargs = |x: X| x.op(b"cookie").u(1).nlm_lock();
    let lockargs = |x: X| x.op(b"cookie").u(1).u(1).nlm_lock().u(0).u(3);
    let res = |x: X| x.op(b"cookie").u(0);
    let share = |x: X| x.op(b"cookie").op(b"client").fh().op(b"owner-1").u(1).u(3).u(0);
    let nlm = [
        ("null", p(0)),
        ("test", testargs(p(1))),
        ("lock", lockargs(p(2))),
        ("cancel", p(3).op(b"cookie").u(1).u(1).nlm_lock()),
        ("unlock", p(4).op(b"cookie").nlm_lock()),
        ("granted", testargs(p(5))),
        ("test_res_denied", p(11).op(b"cookie").u(1).u(1).u(42).op(b"owner-1").h(0).h(100)),
        ("lock_res", res(p(12))),
        ("sm_notify", p(16).op(b"client").u(3).fixed(&[0; 16])),
        ("share", share(p(20))),
        ("nm_lock", lockargs(p(22))),
        ("free_all", p(23).op(b"client").u(5)),
    ];
    for (name, x) in nlm {
        add("nlm", name, x.done());
    }

    let nsm = [
        ("stat", p(1).op(b"client")),
        ("mon", p(2).op(b"client").my_id().fixed(&[9; 16])),
        ("unmon", p(3).op(b"client").my_id()),
        ("unmon_all", p(4).my_id()),
        ("notify", p(6).op(b"client").u(3)),
    ];
    for (name, x) in nsm {
        add("nsm", name, x.done());
    }

    for (name, bytes) in hanfs_raft::fuzzing::sample_frames() {
        add("raft_frame", name, bytes);
    }
    out
}
