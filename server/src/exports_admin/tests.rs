use std::path::PathBuf;

use hanfs_raft::local::LocalCommit;

use super::*;

fn add(name: &str, dir: &str, clients: &str, id: Option<u32>) -> Request {
    Request::Add { name: name.into(), dir: dir.into(), clients: clients.into(), id }
}

fn entry(id: u32, name: &str, dir: &str, clients: &str) -> Entry {
    Entry { id, name: name.into(), dir: dir.into(), clients: normal_clients(name, clients).unwrap() }
}

fn set(state: &mut State, e: &Entry) {
    let cmd = Command::ExportSet { export_id: e.id, path: e.name.clone(), spec: e.spec() };
    state.apply(&cmd).unwrap();
}

#[test]
fn fields_round_trip_and_hold_no_blank() {
    for s in ["/a b/c", "10.0.0.0/8(rw) *(ro)", "-", "%41", "\u{e9}t\u{e9}", "a\tb\nc", ""] {
        let enc = encode_field(s);
        assert!(!enc.contains(char::is_whitespace) && enc != "-", "{enc}");
        assert_eq!(decode_field(&enc).unwrap(), s);
    }
    assert!(decode_field("%4").is_err());
    assert!(decode_field("%zz").is_err());
    assert!(decode_field("%ff").is_err(), "not UTF-8");
}

#[test]
fn requests_round_trip_through_their_line() {
    let reqs = [
        add("/a b", "/srv/a b", "*(rw) 10.0.0.0/8", Some(4)),
        add("/a", "/srv/a", "*", None),
        Request::Update { name: "/a".into(), dir: None, clients: Some("*(ro)".into()) },
        Request::Update { name: "/a".into(), dir: Some("/x".into()), clients: None },
        Request::Remove { name: "/a".into() },
        Request::Reload { exports: vec![entry(1, "/a", "/srv/a", "*"), entry(2, "/b", "/srv/b", "*(rw)")] },
        Request::Reload { exports: Vec::new() },
    ];
    for req in reqs {
        let line = req.to_line();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"exports"));
        assert_eq!(Request::parse(words.get(1..).unwrap()).unwrap(), req, "{line}");
    }
    for bad in [&["add", "/a"][..], &["remove"], &["reload", "1", "/a"], &["add", "/a", "/b", "*", "x"], &["bogus"]] {
        assert!(matches!(Request::parse(bad), Err(ExportsAdminError::Usage)), "{bad:?}");
    }
}

#[test]
fn names_and_dirs_are_absolute_and_never_climb() {
    assert_eq!(normal_name("/a/b/").unwrap(), "/a/b");
    assert_eq!(normal_name("/a//b").unwrap(), "/a/b");
    assert_eq!(normal_name("/").unwrap(), "/");
    for bad in ["a", "", "/a/../b", "/..", "/a/./b", "./a", "/a\0b", "/a\nb", "/a\tb"] {
        assert!(normal_name(bad).is_err(), "{bad:?}");
        assert!(normal_dir(bad).is_err(), "{bad:?}");
    }
    assert!(normal_name(&format!("/{}", "x".repeat(MOUNT_PATH_BYTES_MAX))).is_err());
    assert!(normal_dir(&format!("/{}", "x".repeat(PATH_BYTES_MAX as usize))).is_err());
}

#[test]
fn check_normalises_and_refuses_bad_input() {
    let req = add("/a/", "/srv//a", "*(rw)", None).check().unwrap();
    assert_eq!(req, add("/a", "/srv/a", "*(rw,root_squash,sync,secure,anonuid=65534,anongid=65534)", None));
    let huge = "*".repeat(crate::exports::CLIENT_SPEC_BYTES_MAX + 1);
    assert!(matches!(add("/a", "/srv", &huge, None).check(), Err(ExportsAdminError::Clients { .. })));
    assert!(matches!(add("/a", "/srv", "a,b", None).check(), Err(ExportsAdminError::Clients { .. })));
    assert!(matches!(add("/a", "/srv", "", None).check(), Err(ExportsAdminError::Clients { .. })));
    assert!(matches!(add("/a/../etc", "/srv", "*", None).check(), Err(ExportsAdminError::BadName(_))));
    assert!(matches!(add("/a", "../srv", "*", None).check(), Err(ExportsAdminError::BadDir(_))));
    let update = Request::Update { name: "/a".into(), dir: None, clients: None };
    assert!(matches!(update.check(), Err(ExportsAdminError::NothingToUpdate(_))));
    let twice = Request::Reload { exports: vec![entry(1, "/a", "/s", "*"), entry(2, "/a", "/t", "*")] };
    assert!(matches!(twice.check(), Err(ExportsAdminError::Duplicate(_))));
    let same_id = Request::Reload { exports: vec![entry(1, "/a", "/s", "*"), entry(1, "/b", "/t", "*")] };
    assert!(matches!(same_id.check(), Err(ExportsAdminError::Duplicate(_))));
}

#[test]
fn plans_keep_ids_bound_to_their_names() {
    let mut state = State::default();
    set(&mut state, &entry(3, "/a", "/srv/a", "*"));
    let plan_of = |state: &State, req: Request| plan(state, &req.check().unwrap());
    // A new name takes the next id never used, or the one asked if free.
    let new = plan_of(&state, add("/b", "/srv/b", "*", None)).unwrap();
    assert!(matches!(&new[..], [Change::Set { entry, verb: "added" }] if entry.id == 4));
    let asked = plan_of(&state, add("/b", "/srv/b", "*", Some(9))).unwrap();
    assert!(matches!(&asked[..], [Change::Set { entry, .. }] if entry.id == 9));
    assert!(matches!(
        plan_of(&state, add("/b", "/srv/b", "*", Some(3))),
        Err(ExportsAdminError::IdTaken { id: 3, .. })
    ));
    assert!(matches!(
        plan_of(&state, add("/a", "/srv/a", "*", None)),
        Err(ExportsAdminError::AlreadyExported { id: 3, .. })
    ));
    // Removed: its name comes back with its id, never another.
    state.apply(&Command::ExportRemove { export_id: 3 }).unwrap();
    let back = plan_of(&state, add("/a", "/srv/a2", "*", None)).unwrap();
    assert!(matches!(&back[..], [Change::Set { entry, .. }] if entry.id == 3));
    assert!(matches!(
        plan_of(&state, add("/a", "/srv/a", "*", Some(5))),
        Err(ExportsAdminError::IdChanged { known: 3, asked: 5, .. })
    ));
    assert!(matches!(plan_of(&state, add("/c", "/srv/c", "*", Some(3))), Err(ExportsAdminError::IdTaken { .. })));
    assert!(matches!(plan_of(&state, Request::Remove { name: "/a".into() }), Err(ExportsAdminError::NotExported(_))));
    let update = Request::Update { name: "/a".into(), dir: None, clients: Some("*".into()) };
    assert!(matches!(plan_of(&state, update), Err(ExportsAdminError::NotExported(_))));
}

#[test]
fn update_changes_only_what_is_given_and_reload_is_exportfs_ra() {
    let mut state = State::default();
    set(&mut state, &entry(1, "/a", "/srv/a", "*"));
    set(&mut state, &entry(2, "/b", "/srv/b", "*"));
    let plan_of = |req: Request| plan(&state, &req.check().unwrap()).unwrap();
    let same = Request::Update { name: "/a".into(), dir: None, clients: Some("*(ro,root_squash)".into()) };
    assert_eq!(plan_of(same), Vec::new(), "the same list in another spelling changes nothing");
    let changed = plan_of(Request::Update { name: "/a".into(), dir: None, clients: Some("*(rw)".into()) });
    assert!(
        matches!(&changed[..], [Change::Set { entry, verb: "updated" }] if entry.dir == "/srv/a" && entry.clients.starts_with("*(rw,"))
    );
    let reload = Request::Reload {
        exports: vec![entry(1, "/a", "/srv/a", "*"), entry(2, "/b", "/srv/b", "*(rw)"), entry(7, "/c", "/srv/c", "*")],
    };
    let changes = plan_of(reload);
    assert_eq!(changes.len(), 2);
    let reload = Request::Reload { exports: vec![entry(2, "/b", "/srv/b", "*"), entry(7, "/c", "/srv/c", "*")] };
    let changes = plan_of(reload);
    assert!(changes.contains(&Change::Remove { id: 1, name: "/a".into() }));
    assert!(changes.iter().any(|c| matches!(c, Change::Set { entry, verb: "added" } if entry.id == 7)));
    let wrong_id = Request::Reload { exports: vec![entry(5, "/a", "/srv/a", "*")] };
    assert!(matches!(plan(&state, &wrong_id), Err(ExportsAdminError::IdChanged { known: 1, asked: 5, .. })));
}

fn temp(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hanfs-exports-admin-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("file"), b"x").unwrap();
    dir
}

#[tokio::test]
async fn run_validates_on_disk_and_commits_all_or_nothing() {
    let dir = temp("run");
    let local = LocalCommit::open(&dir.join("state")).unwrap();
    let commit: Arc<dyn Commit> = local.clone();
    let d = |p: &str| dir.join(p).display().to_string();
    let answer = run(&commit, None, &add("/a", &d("a"), "*(rw)", None)).await;
    assert!(answer.starts_with("added /a (id 1): dir "), "{answer}");
    {
        let state = commit.state();
        let guard = state.read().unwrap();
        assert!(guard.export_fs(1).is_some(), "the identity is recorded with the export");
        assert!(guard.exports_seeded());
    }
    for (req, says) in [
        (add("/b", &d("missing"), "*", None), "No such file"),
        (add("/b", &d("file"), "*", None), "Not a directory"),
        (add("/b", &d("b"), "*(bogus)", None), "unknown export option"),
        (add("/b", "relative", "*", None), "must be an absolute path"),
        (add("/a", &d("b"), "*", None), "already exported"),
        // Export id 1 was recorded on dir a: another root under it is refused.
        (Request::Update { name: "/a".into(), dir: Some(d("b")), clients: None }, "is not the filesystem"),
        (
            Request::Reload {
                exports: vec![
                    Entry { id: 2, name: "/b".into(), dir: d("b"), clients: "*".into() },
                    Entry { id: 3, name: "/c".into(), dir: d("missing"), clients: "*".into() },
                ],
            },
            "No such file",
        ),
    ] {
        let answer = run(&commit, None, &req).await;
        assert!(answer.starts_with("error: ") && answer.contains(says), "{req:?}: {answer}");
    }
    let state = commit.state();
    assert_eq!(table(&state.read().unwrap()).len(), 1, "nothing of a refused change was committed");
    let answer = run(&commit, None, &Request::Remove { name: "/a".into() }).await;
    assert_eq!(answer, "removed /a (id 1)\n");
    let answer = run(&commit, None, &add("/b", &d("b"), "*", None)).await;
    assert!(answer.starts_with("added /b (id 2)"), "{answer}");
    local.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn seeding_happens_once_and_differences_name_each_export() {
    let config = |name: &str, dir: &str, id: u32, clients: &str| ExportConfig {
        name: name.into(),
        dir: dir.into(),
        export_id: id,
        clients: parse_clients(clients).unwrap(),
    };
    let cfg = vec![config("/a", "/srv/a", 1, "*(rw)"), config("/b", "/srv/b", 2, "*")];
    let mut state = State::default();
    let seed = seed_commands(&cfg, &state).unwrap();
    assert_eq!(seed.len(), 2);
    for c in &seed {
        state.apply(c).unwrap();
    }
    assert!(seed_commands(&cfg, &state).unwrap().is_empty(), "seeded once");
    assert!(differences(&cfg, &table(&state)).is_empty());
    state.apply(&Command::ExportRemove { export_id: 2 }).unwrap();
    assert!(seed_commands(&[], &state).unwrap().is_empty(), "removing every export does not re-seed");
    let other = vec![config("/a", "/srv/other", 1, "*(rw)"), config("/c", "/srv/c", 3, "*")];
    set(&mut state, &entry(4, "/d", "/srv/d", "*"));
    let diff = differences(&other, &table(&state));
    assert_eq!(diff.len(), 3, "{diff:?}");
    assert!(diff[0].contains("/a: dir /srv/other in the config, /srv/a in the table"), "{diff:?}");
    assert!(diff[1].contains("/c (id 3) is in the config but not exported"), "{diff:?}");
    assert!(diff[2].contains("/d (id 4) is exported but not in the config"), "{diff:?}");
    let (seeded, parsed) = parse_table_lines(&table_lines(&state)).unwrap();
    assert!(seeded);
    assert_eq!(parsed, table(&state));
}
