//! The VIP on its own TUN device (`[vip] device`, the default off loopback),
//! against the real kernel in a namespace of the test's own (helpers in
//! `vip.rs`): the address lives on the device with no subnet route, the
//! Ethernet interface announces it and answers ARP for it, release clears
//! stray copies on the interface, the address vanishes with the device's
//! owner — which is what keeps a killed active from holding the VIP — and,
//! for an owner that is alive but stuck, when its lifetime is not renewed.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use std::time::{Duration, Instant};

use hanfs_server::vip::{Vip, VipConfig, VipError, ANNOUNCE_COUNT, VIP_LIFETIME_S};

use crate::vip::{can_bind, capture, drain, gratuitous, NetNs, ETH_P_ARP, MAC_A, MAC_B};

fn device_vip(addr: &str, device: &str) -> Result<Vip, VipError> {
    Vip::new(VipConfig {
        interface: "vipa".into(),
        addr: addr.parse().expect("address"),
        prefix: 24,
        device: Some(device.into()),
    })
}

/// An ARP request from vipb's side (MAC_B, `sender`) for `target`.
fn arp_request_frame(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

/// (sender MAC, sender IP) of every ARP reply among `frames`.
fn arp_replies(frames: &[Vec<u8>]) -> Vec<([u8; 6], Ipv4Addr)> {
    frames
        .iter()
        .filter(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2])
        .map(|f| {
            let mac: [u8; 6] = f[22..28].try_into().expect("6 bytes");
            (mac, Ipv4Addr::new(f[28], f[29], f[30], f[31]))
        })
        .collect()
}

fn send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: frame is valid for its length; fd is a bound packet socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "send: {}", io::Error::last_os_error());
}

#[test]
fn the_device_carries_the_vip_and_the_interface_announces_and_answers_for_it() {
    let ns = NetNs::with_veth("dev");
    // A storage node's own address on the interface, as on a real host.
    ns.ip(&["addr", "add", "10.77.6.1/24", "dev", "vipa"]);
    let vip_ip = Ipv4Addr::new(10, 77, 6, 10);
    let addr = IpAddr::V4(vip_ip);
    let (garps, replies, held, bindable, shown, routes, released, stray_gone) = ns.run(|rt| {
        let v = device_vip("10.77.6.10", "hvip-t1").expect("device created");
        let cap = capture("vipb", ETH_P_ARP);
        rt.block_on(v.claim()).expect("claim");
        let garps = gratuitous(&drain(&cap));
        let held = rt.block_on(v.held());
        let bindable = can_bind(addr);
        let shown = ns.addrs("hvip-t1") + "|" + &ns.addrs("vipa");
        let routes = ns.ip(&["route", "show", "dev", "hvip-t1"]);
        // A neighbour asks who has the VIP: vipa answers with its MAC.
        send(&cap, &arp_request_frame(Ipv4Addr::new(10, 77, 6, 2), vip_ip));
        let replies = arp_replies(&drain(&cap));
        // A copy left on the interface (by hand, or an older setup) goes too.
        ns.ip(&["addr", "add", "10.77.6.10/32", "dev", "vipa"]);
        rt.block_on(v.release()).expect("release");
        let released = !rt.block_on(v.held()) && !can_bind(addr);
        let stray_gone = !ns.addrs("vipa").contains("10.77.6.10");
        (garps, replies, held, bindable, shown, routes, released, stray_gone)
    });
    assert_eq!(garps.len(), ANNOUNCE_COUNT as usize, "gratuitous ARPs on the interface: {garps:?}");
    for a in &garps {
        assert_eq!((a.sender_ip, a.sender_mac, a.eth_src), (vip_ip, MAC_A, MAC_A), "{a:?}");
    }
    assert!(held, "held() after claim");
    assert!(bindable, "listeners can bind the VIP");
    let (on_device, on_interface) = shown.split_once('|').expect("two parts");
    assert!(on_device.contains("inet 10.77.6.10/24") && on_device.contains("noprefixroute"), "{on_device}");
    assert!(!on_interface.contains("10.77.6.10"), "the VIP is on the device, not the interface: {on_interface}");
    assert!(!routes.contains("10.77.6.0/24"), "no subnet route through the device: {routes}");
    assert!(replies.contains(&(MAC_A, vip_ip)), "the interface answers ARP for the VIP: {replies:?}");
    assert!(released, "release removes the VIP from the device");
    assert!(stray_gone, "release removes copies on the interface");
}

#[test]
fn the_vip_goes_with_the_device_owner_and_a_second_owner_is_refused() {
    let ns = NetNs::with_veth("gone");
    let addr: IpAddr = "10.77.7.10".parse().expect("address");
    let (claimed, busy, after_drop, device_listed) = ns.run(|rt| {
        let v = device_vip("10.77.7.10", "hvip-t2").expect("device created");
        rt.block_on(v.claim()).expect("claim");
        let claimed = can_bind(addr);
        let busy = device_vip("10.77.7.11", "hvip-t2").map(|_| ()).map_err(|e| e.to_string());
        // Closing the device's descriptor is what the kernel does for a
        // process that exits, `kill -9` included.
        drop(v);
        let listed = ns.ip(&["-o", "link", "show"]);
        (claimed, busy, can_bind(addr), listed.contains("hvip-t2"))
    });
    assert!(claimed);
    match busy {
        Err(e) => assert!(e.contains("hvip-t2") && e.contains("another process holds"), "{e}"),
        Ok(()) => panic!("a second owner of the same device name was accepted"),
    }
    assert!(!after_drop, "the VIP outlived its device's owner");
    assert!(!device_listed, "the device outlived its owner");
}

/// Bound on waiting for an unrenewed VIP to expire: its lifetime plus the
/// kernel's address-expiry timer rounding (about a second) plus slack.
const EXPIRY_WAIT_MAX: Duration = Duration::from_secs(VIP_LIFETIME_S as u64 + 4);
const POLL: Duration = Duration::from_millis(100);

#[test]
fn a_vip_that_is_renewed_stays_and_one_that_is_not_expires() {
    let ns = NetNs::with_veth("lft");
    let addr: IpAddr = "10.77.8.10".parse().expect("address");
    let (kept, shown, expired, gone_after) = ns.run(|rt| {
        let v = device_vip("10.77.8.10", "hvip-t3").expect("device created");
        rt.block_on(v.claim()).expect("claim");
        let shown = ns.addrs("hvip-t3");
        // Renewed (as the serving node does every VIP_RENEW_MS) for longer
        // than one lifetime: still there.
        let renew_until = Instant::now() + Duration::from_secs(VIP_LIFETIME_S as u64 + 1);
        let mut kept = true;
        while Instant::now() < renew_until {
            rt.block_on(v.add_address()).expect("renew");
            kept &= can_bind(addr);
            std::thread::sleep(Duration::from_millis(500));
        }
        // Not renewed any more, as by a stopped or stuck process: it expires.
        let started = Instant::now();
        let mut expired = false;
        while started.elapsed() < EXPIRY_WAIT_MAX {
            if !can_bind(addr) {
                expired = true;
                break;
            }
            std::thread::sleep(POLL);
        }
        let gone_after = started.elapsed();
        (kept, shown, expired, gone_after)
    });
    let line = shown.lines().find(|l| l.contains("10.77.8.10")).unwrap_or_default();
    assert!(line.contains("valid_lft") && !line.contains("valid_lft forever"), "a finite lifetime: {shown}");
    assert!(kept, "a renewed VIP must stay");
    assert!(expired, "an unrenewed VIP must expire (waited {EXPIRY_WAIT_MAX:?})");
    eprintln!("unrenewed VIP gone {} ms after the last renewal", gone_after.as_millis());
}
