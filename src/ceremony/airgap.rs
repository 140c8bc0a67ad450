//! The air-gap guard: a ceremony laptop has no network.
//!
//! The guard fails closed. Interfaces are listed from `/proc/self/net/dev`,
//! which shows the network namespace the process runs in, so `unshare -n`
//! (or `ip netns exec`) is enough to rehearse air-gapped; `/sys/class/net`
//! shows the namespace that mounted sysfs, often the host's. An interface
//! counts as up when its `IFF_UP` flag is set, whatever its carrier, because
//! a cable can be plugged in mid-ceremony; an interface whose flags cannot be
//! read (sysfs belongs to another namespace, or is hidden) counts as up too.
//! If the list itself cannot be read, the guard refuses to say "no network".
//! Loopback is ignored.

use std::fs;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

/// Where the current network namespace's interfaces are listed.
const PROC_NET_DEV: &str = "/proc/self/net/dev";

/// The non-loopback interfaces that are up (or whose state is unknown),
/// sorted; an error says why the interfaces could not be listed at all.
pub fn interfaces_up() -> Result<Vec<String>, String> {
    let list = fs::read_to_string(PROC_NET_DEV).map_err(|e| format!("{PROC_NET_DEV} cannot be read: {e}"))?;
    interfaces_up_in(&list, |name| {
        let flags = fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
        u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()
    })
}

/// The decision, apart from the files: `list` is `/proc/net/dev`'s text and
/// `flags` reads an interface's flags (`None` when they cannot be read).
fn interfaces_up_in(list: &str, flags: impl Fn(&str) -> Option<u32>) -> Result<Vec<String>, String> {
    let mut lines = list.lines();
    let header_ok =
        lines.next().is_some_and(|l| l.contains("Receive")) && lines.next().is_some_and(|l| l.contains("face"));
    if !header_ok {
        return Err(format!("{PROC_NET_DEV} is not the kernel's interface list (it is empty or altered)"));
    }
    let mut up = Vec::new();
    for line in lines {
        let name = line
            .split_once(':')
            .map(|(n, _)| n.trim())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{PROC_NET_DEV} has a line that names no interface: {line:?}"))?;
        let counts_as_up = match flags(name) {
            Some(f) => f & IFF_LOOPBACK == 0 && f & IFF_UP != 0,
            // lo is loopback in every namespace; any other interface whose
            // state is unknown may carry traffic.
            None => name != "lo",
        };
        if counts_as_up {
            up.push(name.to_string());
        }
    }
    up.sort();
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Inter-|   Receive                            |  Transmit\n face |bytes    packets errs|bytes\n";

    fn list(names: &[&str]) -> String {
        let mut s = HEADER.to_string();
        for n in names {
            s.push_str(&format!("  {n}: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"));
        }
        s
    }

    #[test]
    fn an_up_interface_is_named_and_loopback_and_down_ones_are_not() {
        let flags = |n: &str| match n {
            "lo" => Some(0x9),
            "eth0" => Some(0x1003),
            "wlan0" => Some(0x1002),
            _ => None,
        };
        assert_eq!(interfaces_up_in(&list(&["lo", "eth0", "wlan0"]), flags), Ok(vec!["eth0".to_string()]));
    }

    #[test]
    fn an_interface_whose_state_cannot_be_read_counts_as_up() {
        let up = interfaces_up_in(&list(&["lo", "veth7"]), |_| None).expect("listed");
        assert_eq!(up, vec!["veth7".to_string()]);
    }

    #[test]
    fn a_list_that_cannot_be_read_is_an_error_never_no_network() {
        assert!(interfaces_up_in("", |_| Some(0)).is_err());
        assert!(interfaces_up_in("garbage\n", |_| Some(0)).is_err());
        assert!(interfaces_up_in(&format!("{HEADER}no colon here\n"), |_| Some(0)).is_err());
    }
}
