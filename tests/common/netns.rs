//! A private network for a process cluster, so the nemesis can cut the link between two
//! nodes: each node runs in its own network namespace (`ip netns`), joined by a veth pair to
//! a bridge in the test's namespace, with its own address on a /24 that the test process
//! reaches through the bridge. A cut is a pair of DROP rules in each node's namespace;
//! healing deletes them. Needs root and `ip`/`iptables`; `Network::create` says why not
//! otherwise, and callers skip the cuts with that message.
//!
//! Names carry the test process id, so concurrent tests (and leftovers of a killed run) do
//! not collide; dropping the network deletes the namespaces (and with them the veth pairs)
//! and the bridge.

use std::process::Command;

/// Runs a command and returns its stderr on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|err| format!("{program}: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The `10.213.N` prefixes of the IPv4 addresses the host's interfaces have.
fn subnets_in_use() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["-o", "-4", "addr", "show"]).output() else { return Vec::new() };
    (String::from_utf8_lossy(&out.stdout).split_whitespace())
        .filter_map(|word| word.strip_prefix("10.213."))
        .filter_map(|rest| rest.split('.').next())
        .map(|third| format!("10.213.{third}"))
        .collect()
}

/// The bridge, the namespaces and their addresses.
pub struct Network {
    bridge: String,
    /// Per node: its namespace and its address.
    pub nodes: Vec<(String, String)>,
}

impl Network {
    /// Creates a bridge and `n` namespaces attached to it, each with one address.
    pub fn create(n: usize) -> Result<Network, String> {
        let out = Command::new("id").arg("-u").output().map_err(|err| format!("id: {err}"))?;
        if String::from_utf8_lossy(&out.stdout).trim() != "0" {
            return Err("network cuts need root (ip netns, iptables)".into());
        }
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("network cuts need `{tool}`"));
            }
        }
        let pid = std::process::id();
        // A /24 of 10.213.0.0/16 picked by process id and a counter (two cluster tests may run
        // in one process), past any /24 an interface already has: a test killed before its
        // drop leaves its bridge and namespaces behind, and a second bridge on the same /24
        // would take the first one's routes.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let first = pid.wrapping_mul(7).wrapping_add(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let taken = subnets_in_use();
        let (subnet, tag) = (0..250)
            .map(|step| first.wrapping_add(step))
            .map(|id| (format!("10.213.{}", id % 250), format!("{:x}", id % 0xfffff)))
            .find(|(subnet, tag)| {
                !taken.contains(subnet) && !std::path::Path::new(&format!("/sys/class/net/rnb{tag}")).exists()
            })
            .ok_or("every /24 of 10.213.0.0/16 is in use (leftover bridges: `ip link show type bridge`)")?;
        let mut network = Network { bridge: format!("rnb{tag}"), nodes: Vec::new() };
        run("ip", &["link", "add", &network.bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{subnet}.1/24"), "dev", &network.bridge])?;
        run("ip", &["link", "set", &network.bridge, "up"])?;
        // Where bridged frames pass the host's iptables (br_netfilter) and its FORWARD policy
        // drops (Docker sets that), node-to-node traffic needs this bridge let through.
        run("iptables", &["-I", "FORWARD", "-i", &network.bridge, "-o", &network.bridge, "-j", "ACCEPT"])?;
        for i in 0..n {
            let namespace = format!("ranged-nemesis-{tag}-{i}");
            let address = format!("{subnet}.{}", i + 2);
            let (host_end, node_end) = (format!("rn{tag}h{i}"), format!("rn{tag}n{i}"));
            run("ip", &["netns", "add", &namespace])?;
            network.nodes.push((namespace.clone(), address.clone()));
            run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
            run("ip", &["link", "set", &node_end, "netns", &namespace])?;
            run("ip", &["link", "set", &host_end, "master", &network.bridge])?;
            run("ip", &["link", "set", &host_end, "up"])?;
            let exec = ["netns", "exec", namespace.as_str(), "ip"];
            run("ip", &[&exec[..], &["addr", "add", &format!("{address}/24"), "dev", &node_end]].concat())?;
            run("ip", &[&exec[..], &["link", "set", &node_end, "up"]].concat())?;
            run("ip", &[&exec[..], &["link", "set", "lo", "up"]].concat())?;
        }
        Ok(network)
    }

    /// Adds (`-I`) or deletes (`-D`) the rules that drop traffic between nodes `a` and `b`,
    /// in both namespaces and both directions.
    fn rules(&self, action: &str, a: usize, b: usize) -> Result<(), String> {
        for (this, other) in [(a, b), (b, a)] {
            let (namespace, _) = &self.nodes[this];
            let (_, peer) = &self.nodes[other];
            for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                run("ip", &["netns", "exec", namespace, "iptables", action, chain, side, peer, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Cuts the link between nodes `a` and `b` (each still reaches the others and the test).
    pub fn cut(&self, a: usize, b: usize) {
        self.rules("-I", a, b).expect("add the DROP rules");
    }

    /// Restores the link between nodes `a` and `b`.
    pub fn heal(&self, a: usize, b: usize) {
        self.rules("-D", a, b).expect("delete the DROP rules");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for (namespace, _) in &self.nodes {
            let _ = run("ip", &["netns", "del", namespace]);
        }
        let _ = run("iptables", &["-D", "FORWARD", "-i", &self.bridge, "-o", &self.bridge, "-j", "ACCEPT"]);
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
