//! Entry points for the fuzz target `raft_frame` (`tests/fuzz`) and its
//! regression test: decode one peer frame's payload, as it arrives after the
//! transport's authentication layer, into a `network::PeerRequest` (server
//! side) or `network::PeerResponse` (client side) with the transport's own
//! `types::decode` and bound. A decoded value must encode again and decode
//! from that encoding. `sample_frames` gives valid payloads for the seed
//! corpus. Not an API.

use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

use crate::network::{PeerRequest, PeerResponse, PEER_FRAME_BYTES_MAX};
use crate::types::{decode, encode, typ};

/// `[kind, payload...]`: an even `kind` decodes a request, an odd one a
/// response. Returns whether the payload decoded.
pub fn peer_frame(data: &[u8]) -> bool {
    let Some((kind, payload)) = data.split_first() else { return false };
    if kind % 2 == 0 {
        round_trip::<PeerRequest>(payload)
    } else {
        round_trip::<PeerResponse>(payload)
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(payload: &[u8]) -> bool {
    let Ok(value) = decode::<T>(payload, PEER_FRAME_BYTES_MAX) else { return false };
    let bytes = match encode(&value, PEER_FRAME_BYTES_MAX) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded frame does not encode: {e}"),
    };
    if let Err(e) = decode::<T>(&bytes, PEER_FRAME_BYTES_MAX) {
        panic!("a re-encoded frame does not decode: {e}");
    }
    true
}

/// Valid `peer_frame` inputs (kind byte included), named, for seeds.
pub fn sample_frames() -> Vec<(&'static str, Vec<u8>)> {
    let vote = Vote::new(3, 1);
    let log_id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
    let entry = |index, cmd| typ::Entry { log_id: log_id(index), payload: EntryPayload::Normal(cmd) };
    let append = typ::AppendEntriesRequest {
        vote,
        prev_log_id: Some(log_id(6)),
        entries: vec![
            entry(7, hanfs_state::Command::Mount { client: "192.0.2.7".into(), path: "/srv".into() }),
            entry(8, hanfs_state::Command::BumpEpoch),
        ],
        leader_commit: Some(log_id(6)),
    };
    let snapshot = typ::InstallSnapshotRequest {
        vote,
        meta: typ::SnapshotMeta {
            last_log_id: Some(log_id(8)),
            last_membership: Default::default(),
            snapshot_id: "3-1-8".into(),
        },
        offset: 0,
        data: vec![1, 2, 3, 4],
        done: true,
    };
    let requests = [
        ("append", PeerRequest::Append(append)),
        ("vote", PeerRequest::Vote(typ::VoteRequest::new(vote, Some(log_id(8))))),
        ("snapshot", PeerRequest::Snapshot(snapshot)),
        ("view", PeerRequest::View),
        ("admin", PeerRequest::Admin("switchover 2".into())),
    ];
    let responses = [
        ("append_ok", PeerResponse::Append(Ok(openraft::raft::AppendEntriesResponse::Success))),
        ("vote_ok", PeerResponse::Vote(Ok(typ::VoteResponse::new(vote, Some(log_id(8)), true)))),
        ("snapshot_ok", PeerResponse::Snapshot(Ok(typ::InstallSnapshotResponse { vote }))),
        ("view_none", PeerResponse::View(None)),
        ("admin_ok", PeerResponse::Admin(Some("ok\n".into()))),
    ];
    let framed = |kind: u8, bytes: Result<Vec<u8>, _>| {
        let mut out = vec![kind];
        out.extend(bytes.unwrap_or_default());
        out
    };
    let mut out: Vec<_> =
        requests.iter().map(|(name, r)| (*name, framed(0, encode(r, PEER_FRAME_BYTES_MAX)))).collect();
    out.extend(responses.iter().map(|(name, r)| (*name, framed(1, encode(r, PEER_FRAME_BYTES_MAX)))));
    out
}
