//! Exports changed live on a running single node (issue 12 item 2): `exports
//! add` serves a new export at once, `update` changes its client list,
//! `remove` refuses new mounts and makes its handles STALE, adding it again
//! gives back the same id (its old handles work again); bad requests are
//! refused with nothing committed; and the table, not the config, is what a
//! restart serves.

use hanfs_server::exports_admin::Request;
use nfs3_client::tokio::TokioConnector;
use nfs3_client::{MountError, Nfs3ConnectionBuilder};
use nfs3_types::mount::{dirpath, mountstat3};
use nfs3_types::nfs3::nfsstat3;
use nfs3_types::xdr_codec::Opaque;

use crate::nfs3_ops::*;
use crate::util::*;

const CLIENTS: &str = "127.0.0.0/8(rw,no_root_squash,insecure)";

async fn ask(s: &TestServer, req: &Request) -> String {
    let line = req.check().map(|r| r.to_line()).unwrap_or_else(|e| panic!("{req:?}: {e}"));
    hanfs_server::admin::query(&s.state_dir, &line).await.expect("admin socket answers")
}

async fn mount(s: &TestServer, name: &str) -> Result<Conn, nfs3_client::ConnectError> {
    Nfs3ConnectionBuilder::new(TokioConnector, s.addr().to_string(), name)
        .portmapper_port(s.portmap_port)
        .mount_port(s.mount_port)
        .nfs3_port(s.nfs_port)
        .credential(auth_sys(0, 0, &[]))
        .mount()
        .await
}

/// MNT of `name`: Ok, or the refusal's `mountstat3` number.
async fn mnt_status(s: &TestServer, name: &str) -> Result<(), u32> {
    let mut c = mount_client(s.mount_port, false).await;
    match c.mnt(dirpath(Opaque::owned(name.as_bytes().to_vec()))).await {
        Ok(_) => Ok(()),
        Err(MountError::Denied(stat)) => Err(stat as u32),
        Err(e) => panic!("MNT {name}: {e:?}"),
    }
}

fn add(name: &str, dir: &std::path::Path, clients: &str) -> Request {
    Request::Add { name: name.into(), dir: dir.display().to_string(), clients: clients.into(), id: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_update_remove_and_add_again_while_serving() {
    let export = tempdir("live-export");
    let second = tempdir("live-second");
    std::fs::write(second.path().join("hello"), b"second").expect("write");
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    assert_eq!(mnt_status(&s, "/second").await, Err(mountstat3::MNT3ERR_NOENT as u32));

    let answer = ask(&s, &add("/second", second.path(), CLIENTS)).await;
    assert!(answer.starts_with("added /second (id 2): dir "), "{answer}");
    let mut c = mount(&s, "/second").await.expect("the new export mounts at once");
    let root = c.root_nfs_fh3();
    let (hello, _) = lookup(&mut c, &root, "hello").await.expect("LOOKUP");
    assert_eq!(read(&mut c, &hello, 0, 100).await.expect("READ").0, b"second");
    let listing = hanfs_server::admin::query(&s.state_dir, "exports").await.expect("exports");
    assert!(listing.lines().any(|l| l.starts_with("2 /second ") && l.contains("127.0.0.0/8(rw,")), "{listing}");

    // A client list that leaves 127.0.0.1 out: MNT and NFS calls refused.
    let answer =
        ask(&s, &Request::Update { name: "/second".into(), dir: None, clients: Some("10.0.0.0/8(rw)".into()) }).await;
    assert!(answer.starts_with("updated /second (id 2)"), "{answer}");
    assert_eq!(mnt_status(&s, "/second").await, Err(mountstat3::MNT3ERR_ACCES as u32));
    assert_eq!(getattr(&mut c, &hello).await.err(), Some(nfsstat3::NFS3ERR_ACCES));
    ask(&s, &Request::Update { name: "/second".into(), dir: None, clients: Some(CLIENTS.into()) }).await;
    assert!(getattr(&mut c, &hello).await.is_ok());

    // Removed: new mounts refused, handles STALE (knfsd after `exportfs -u`).
    assert_eq!(ask(&s, &Request::Remove { name: "/second".into() }).await, "removed /second (id 2)\n");
    assert_eq!(mnt_status(&s, "/second").await, Err(mountstat3::MNT3ERR_NOENT as u32));
    assert_eq!(getattr(&mut c, &hello).await.err(), Some(nfsstat3::NFS3ERR_STALE));
    assert_eq!(read(&mut c, &hello, 0, 10).await.err(), Some(nfsstat3::NFS3ERR_STALE));
    let listing = hanfs_server::admin::query(&s.state_dir, "exports").await.expect("exports");
    assert!(listing.contains("2 /second (removed)"), "{listing}");
    // The other export never noticed.
    let mut first = s.connect().await;
    let first_root = first.root_nfs_fh3();
    create(&mut first, &first_root, "still-here").await.expect("CREATE in /export");

    // Added again: the same id, so the old handle resolves again.
    let answer = ask(&s, &add("/second", second.path(), CLIENTS)).await;
    assert!(answer.starts_with("added /second (id 2)"), "{answer}");
    assert_eq!(read(&mut c, &hello, 0, 100).await.expect("READ again").0, b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_commit_nothing() {
    let export = tempdir("live-bad");
    let other = tempdir("live-bad-other");
    std::fs::write(other.path().join("file"), b"x").expect("write");
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    let before = hanfs_server::admin::query(&s.state_dir, "exports").await.expect("exports");
    let cases: Vec<(Request, &str)> = vec![
        // The export's own name again.
        (add("/export", other.path(), CLIENTS), "already exported"),
        // Another name on the id of /export.
        (
            Request::Add {
                name: "/forged".into(),
                dir: other.path().display().to_string(),
                clients: CLIENTS.into(),
                id: Some(1),
            },
            "export id 1 already names /export",
        ),
        (add("/gone", &other.path().join("missing"), CLIENTS), "No such file"),
        (add("/file", &other.path().join("file"), CLIENTS), "Not a directory"),
        (add("/opts", other.path(), "*(rw,bogus)"), "unknown export option"),
        // /export's filesystem root is recorded: another directory is refused.
        (
            Request::Update { name: "/export".into(), dir: Some(other.path().display().to_string()), clients: None },
            "is not the filesystem",
        ),
        (Request::Remove { name: "/nothing".into() }, "/nothing is not exported"),
    ];
    for (req, says) in cases {
        // As sent, unchecked: the node checks for itself.
        let answer = hanfs_server::admin::query(&s.state_dir, &req.to_line()).await.expect("answer");
        assert!(answer.starts_with("error: ") && answer.contains(says), "{req:?}: {answer}");
    }
    // Refused before any node is asked (the CLI checks the same way) and by the node.
    for (name, dir) in [("/a/../etc", "/tmp"), ("relative", "/tmp"), ("/ok", "../tmp"), ("/ok", "/tmp/./x")] {
        assert!(add(name, std::path::Path::new(dir), "*").check().is_err(), "{name} {dir}");
        let line = format!(
            "exports add {} {} * -",
            hanfs_server::exports_admin::encode_field(name),
            hanfs_server::exports_admin::encode_field(dir)
        );
        let answer = hanfs_server::admin::query(&s.state_dir, &line).await.expect("answer");
        assert!(answer.starts_with("error: export "), "{line}: {answer}");
    }
    let huge = format!(
        "exports add /huge {} {} -",
        hanfs_server::exports_admin::encode_field(&other.path().display().to_string()),
        "*".repeat(hanfs_server::exports::CLIENT_SPEC_BYTES_MAX + 1)
    );
    let answer = hanfs_server::admin::query(&s.state_dir, &huge).await.expect("answer");
    assert!(answer.contains("client list longer than"), "{answer}");
    let too_long = format!("exports add /x /y {} -", "*".repeat(hanfs_server::admin::ADMIN_LINE_BYTES_MAX as usize));
    // Refused, never cut short: the answer says so, or, as the node stops
    // reading at the bound and closes, the unread rest resets the connection.
    match hanfs_server::admin::query(&s.state_dir, &too_long).await {
        Ok(answer) => assert!(answer.starts_with("error: command longer than"), "{}", &answer[..answer.len().min(200)]),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let after = hanfs_server::admin::query(&s.state_dir, "exports").await.expect("exports");
    assert_eq!(after, before, "nothing was committed");
    s.connect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_not_the_config_is_served_after_a_restart() {
    let export = tempdir("live-restart");
    let added = tempdir("live-restart-added");
    let mut s = TestServer::start(export.path(), RW_NO_SQUASH);
    let answer = ask(&s, &add("/added", added.path(), CLIENTS)).await;
    assert!(answer.starts_with("added /added (id 2)"), "{answer}");
    ask(&s, &Request::Remove { name: "/export".into() }).await;
    s.restart();
    // The config still names /export and not /added: the table wins.
    assert_eq!(mnt_status(&s, "/export").await, Err(mountstat3::MNT3ERR_NOENT as u32));
    mount(&s, "/added").await.expect("the added export is served after the restart");
    // exportfs -ra with the config's list: /export back (same id), /added gone.
    let cfg = test_config(export.path(), RW_NO_SQUASH, &s.state_dir);
    let exports =
        cfg.exports.iter().map(hanfs_server::exports_admin::Entry::from_config).collect::<Result<Vec<_>, _>>();
    let answer = ask(&s, &Request::Reload { exports: exports.expect("entries") }).await;
    assert!(answer.contains("added /export (id 1)") && answer.contains("removed /added (id 2)"), "{answer}");
    s.connect().await;
    assert_eq!(mnt_status(&s, "/added").await, Err(mountstat3::MNT3ERR_NOENT as u32));
    let again = ask(
        &s,
        &Request::Reload {
            exports: cfg
                .exports
                .iter()
                .map(|e| hanfs_server::exports_admin::Entry::from_config(e).expect("entry"))
                .collect(),
        },
    )
    .await;
    assert_eq!(again, "unchanged: 1 export(s)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_warns_when_the_file_differs_from_the_table() {
    let export = tempdir("live-check");
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    let dir = tempdir("live-check-config");
    let file = dir.path().join("hanfs.toml");
    let config = |clients: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1\"\nstate_dir = \"{}\"\n\n[[export]]\nname = \"/export\"\ndir = \"{}\"\nid = 1\nclients = \"{clients}\"\n",
            s.state_dir.display(),
            export.path().display()
        )
    };
    let check = |text: String| {
        std::fs::write(&file, text).expect("write config");
        let out = std::process::Command::new(server_binary())
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run check-config");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Another spelling of the same list is the same list.
    let same = check(config("*(rw,no_root_squash,insecure,sync,no_subtree_check)"));
    assert!(same.contains("exports table: the same as this file (1 exports)"), "{same}");
    let differs = check(config("10.0.0.0/8(rw)"));
    assert!(differs.contains("warning: this file's [[export]] list differs"), "{differs}");
    assert!(differs.contains("/export: clients `10.0.0.0/8(rw,"), "{differs}");
    assert!(differs.contains(&format!("hanfs-server exports reload --config {}", file.display())), "{differs}");
}

/// What this server chose for the locks of a removed export: they stay in
/// the replicated lock table (a client's UNLOCK of a handle of the removed
/// export gets STALE_FH, like any call with its handles; SM_NOTIFY or
/// FREE_ALL of the client still frees them), the server keeps serving, and
/// once the export is added back (same id) the lock is there and unlocks.
#[test]
fn removing_an_export_with_a_held_lock_keeps_the_lock_and_the_server() {
    use crate::nlm::{lock, lock_args, nlm_stat, unlock_args, NLM_LOCK, NLM_UNLOCK};
    use hanfs_server::nlm::xdr::Nlm4Stats;
    let export = tempdir("live-lock");
    let state = tempdir("live-lock-state");
    let (s, fh) = crate::nlm::start_with_file(test_config(export.path(), RW_NO_SQUASH, state.path()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let alock = lock(&fh, "client-a", 1, 0, 10);
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_LOCK, &lock_args(alock.clone(), true, false)), Nlm4Stats::Granted);
    let answer = rt.block_on(ask(&s, &Request::Remove { name: "/export".into() }));
    assert_eq!(answer, "removed /export (id 1)\n");
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(alock.clone())), Nlm4Stats::StaleFh);
    assert_eq!(nlm_stat(s.nlm_port, true, NLM_LOCK, &lock_args(alock.clone(), true, false)), Nlm4Stats::StaleFh);
    let locks = rt.block_on(hanfs_server::admin::query(&s.state_dir, "locks")).expect("locks");
    assert!(locks.lines().any(|l| l.starts_with("held") && l.contains("client-a")), "{locks}");
    let answer = rt.block_on(ask(&s, &add("/export", export.path(), RW_NO_SQUASH)));
    assert!(answer.starts_with("added /export (id 1)"), "{answer}");
    assert_eq!(nlm_stat(s.nlm_port, false, NLM_UNLOCK, &unlock_args(alock)), Nlm4Stats::Granted);
    let locks = rt.block_on(hanfs_server::admin::query(&s.state_dir, "locks")).expect("locks");
    assert!(!locks.lines().any(|l| l.starts_with("held")), "{locks}");
}
