//! Printing of client and bench results: aligned tables, JSON, and the bench result lines.

use super::args::Format;
use crate::pb;
use crate::services::membership;

/// Prints a bench latency result as `requests errors p50_ms p99_ms ops_per_s`.
pub fn print_latency(l: &crate::bench::Latency) {
    println!("{} {} {:.3} {:.3} {:.1}", l.requests, l.errors, l.p50_ms, l.p99_ms, l.ops_per_s);
}

/// Prints a bench result for one API path as `path requests errors p50_ms p99_ms ops_per_s`.
pub fn print_path_latency(p: &crate::bench::PathLatency) {
    let l = &p.latency;
    println!("{} {} {} {:.3} {:.3} {:.1}", p.path, l.requests, l.errors, l.p50_ms, l.p99_ms, l.ops_per_s);
}

/// The store metrics `ranged node status --ranges` shows: (column, metric).
const RANGE_COLUMNS: [(&str, &str); 4] = [
    ("replicas", "replicas"),
    ("replicas_leaseholders", "replicas.leaseholders"),
    ("ranges_unavailable", "ranges.unavailable"),
    ("ranges_underreplicated", "ranges.underreplicated"),
];

/// Prints `ranged node status`: one row per node with its liveness, and with `ranges` its
/// last reported range counts (summed over its stores).
pub fn print_nodes(nodes: &[pb::NodeEntry], format: Format, ranges: bool) {
    let rows: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| {
            let d = node.descriptor.clone().unwrap_or_default();
            let locality: Vec<String> = d
                .locality
                .map(|l| l.tiers.into_iter().map(|t| format!("{}={}", t.key, t.value)).collect())
                .unwrap_or_default();
            let mut row = serde_json::json!({
                "id": d.node_id,
                "address": d.address,
                "sql_address": d.sql_address,
                "build": d.build_tag,
                "started_at": d.started_at,
                "locality": locality.join(","),
                "liveness": membership::Liveness::from_wire(node.liveness).name(),
                "is_live": node.liveness == membership::Liveness::Live as i32,
            });
            if ranges {
                for (column, metric) in RANGE_COLUMNS {
                    let sum: f64 = node.store_metrics.values().filter_map(|m| m.metrics.get(metric)).sum();
                    row[column] = serde_json::json!(sum as u64);
                }
            }
            row
        })
        .collect();
    match format {
        Format::Json => println!("{}", serde_json::Value::Array(rows)),
        Format::Table => {
            let mut header =
                format!("{:<4} {:<24} {:<24} {:<10} {:<12}", "id", "address", "sql_address", "build", "liveness");
            if ranges {
                for (column, _) in RANGE_COLUMNS {
                    header.push_str(&format!(" {column:>22}"));
                }
            }
            println!("{header} locality");
            for row in rows {
                let mut line = format!(
                    "{:<4} {:<24} {:<24} {:<10} {:<12}",
                    row["id"].to_string(),
                    row["address"].as_str().unwrap_or_default(),
                    row["sql_address"].as_str().unwrap_or_default(),
                    row["build"].as_str().unwrap_or_default(),
                    row["liveness"].as_str().unwrap_or_default(),
                );
                if ranges {
                    for (column, _) in RANGE_COLUMNS {
                        line.push_str(&format!(" {:>22}", row[column]));
                    }
                }
                println!("{line} {}", row["locality"].as_str().unwrap_or_default());
            }
        }
    }
}

/// Prints `ranged node decommission`'s progress in CockroachDB's columns.
pub fn print_decommission(status: &[pb::DecommissionStatus], format: Format) {
    let membership = |value: i32| match pb::MembershipStatus::try_from(value) {
        Ok(pb::MembershipStatus::Decommissioning) => "decommissioning",
        Ok(pb::MembershipStatus::Decommissioned) => "decommissioned",
        _ => "active",
    };
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = status
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.node_id,
                        "is_live": s.is_live,
                        "replicas": s.replica_count,
                        "is_decommissioning": s.membership != pb::MembershipStatus::Active as i32,
                        "membership": membership(s.membership),
                        "is_draining": s.draining,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        Format::Table => {
            println!("  id | is_live | replicas | is_decommissioning |   membership    | is_draining");
            println!("-----+---------+----------+--------------------+-----------------+--------------");
            for s in status {
                let row = format!(
                    "{:>4} | {:^7} | {:>8} | {:^18} | {:^15} | {:^11}",
                    s.node_id,
                    s.is_live,
                    s.replica_count,
                    s.membership != pb::MembershipStatus::Active as i32,
                    membership(s.membership),
                    s.draining
                );
                println!("{}", row.trim_end());
            }
            println!("({} row{})", status.len(), if status.len() == 1 { "" } else { "s" });
        }
    }
}

/// Prints `ranged node ranges`: one row per range with its replicas, lease and load.
pub fn print_ranges(ranges: &[pb::RangeInfo], format: Format) {
    let rows: Vec<serde_json::Value> = ranges
        .iter()
        .map(|info| {
            let d = info.descriptor.clone().unwrap_or_default();
            let raft = info.raft.clone().unwrap_or_default();
            let load = info.load.unwrap_or_default();
            serde_json::json!({
                "range_id": d.range_id,
                "start_key": crate::services::sql::value::pretty_any(&d.start_key),
                "end_key": crate::services::sql::value::pretty_any_end(&d.end_key),
                "replicas": d.replicas.iter().map(|r| r.node_id).collect::<Vec<_>>(),
                "leaseholder": raft.leader_id,
                "term": raft.term,
                "applied_index": raft.applied_index,
                "commit_index": raft.commit_index,
                "keys": info.key_count,
                "bytes": info.live_bytes,
                "qps": load.queries_per_second,
                "reads_per_second": load.reads_per_second,
                "writes_per_second": load.writes_per_second,
                "read_bytes_per_second": load.read_bytes_per_second,
                "write_bytes_per_second": load.write_bytes_per_second,
                "cpu_time_per_second": load.cpu_time_per_second,
            })
        })
        .collect();
    match format {
        Format::Json => println!("{}", serde_json::Value::Array(rows)),
        Format::Table => {
            println!(
                "{:<6} {:<24} {:<24} {:<10} {:<6} {:>8} {:>10} {:>10}",
                "range", "start", "end", "replicas", "lease", "keys", "bytes", "qps"
            );
            for row in rows {
                println!(
                    "{:<6} {:<24} {:<24} {:<10} {:<6} {:>8} {:>10} {:>10.1}",
                    row["range_id"].to_string(),
                    row["start_key"].as_str().unwrap_or_default(),
                    row["end_key"].as_str().unwrap_or_default(),
                    row["replicas"].to_string(),
                    row["leaseholder"].to_string(),
                    row["keys"].to_string(),
                    row["bytes"].to_string(),
                    row["qps"].as_f64().unwrap_or_default()
                );
            }
        }
    }
}
