//! The client commands: `init`, `kv`, `node` and `cert` talk to a node (or write certificate
//! files); `workload` and `bench` hand their flags to the load generators.

use std::time::Duration;

use tonic::transport::Channel;

use super::args::{CertArgs, CertCommand, ClientArgs, InitArgs, KvCommand, NodeCommand, WorkloadCommand};
use super::args::{Format, KvArgs, Wait, Workload};
use super::bench_args::BenchCommand;
use super::output::{print_decommission, print_latency, print_nodes, print_path_latency, print_ranges};
use super::shutdown_signal;
use crate::pb;
use crate::services::dialer::Dialer;
use crate::services::error::Error;
use crate::services::kv::{Op, OpResult};
use crate::services::tls::{CA_KEY, TlsMaterials};
use crate::services::{certs, keys};

/// How long a client command waits for its node.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A channel to the node a client command names.
pub async fn connect(client: &ClientArgs) -> Result<Channel, Error> {
    let tls = if client.security.insecure {
        None
    } else {
        Some(TlsMaterials::load_client(&client.security.certs_dir, "root")?)
    };
    let dialer = Dialer::new(tls.as_ref());
    let endpoint = dialer.endpoint(&client.host)?.timeout(CLIENT_TIMEOUT);
    endpoint
        .connect()
        .await
        .map_err(|err| Error::Unavailable(format!("cannot reach node at {}: {}", client.host, error_chain(&err))))
}

/// An error with its causes, colon separated: tonic's own message alone hides why a dial failed.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs `ops` as one batch on the client's node.
async fn batch(client: &ClientArgs, ops: Vec<Op>) -> Result<Vec<OpResult>, Error> {
    let mut kv = pb::kv_service_client::KvServiceClient::new(connect(client).await?);
    let reply = kv.batch(pb::BatchRequest::from_ops(ops, None)).await?;
    Ok(reply.into_inner().into_results())
}

fn user_key(text: &str) -> Result<Vec<u8>, Error> {
    keys::parse_user_key(text).map_err(Error::InvalidArgument)
}

/// `ranged init`.
pub async fn init(args: InitArgs) -> Result<(), Error> {
    let root_password = match &args.root_password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| Error::InvalidArgument(format!("cannot read {}: {err}", path.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => String::new(),
    };
    if args.root_password_file.is_some() && root_password.is_empty() {
        return Err(Error::InvalidArgument("the root password file is empty".into()));
    }
    let mut client = pb::node_service_client::NodeServiceClient::new(connect(&args.client).await?);
    let reply = client.init(pb::InitRequest { root_password }).await?.into_inner();
    println!("Cluster successfully initialized (cluster id {})", reply.cluster_id);
    Ok(())
}

/// `ranged kv ...`.
pub async fn kv(client: ClientArgs, command: KvCommand) -> Result<(), Error> {
    match command {
        KvCommand::Put { key, value } => {
            batch(&client, vec![Op::Put { key: user_key(&key)?, value: value.into_bytes() }]).await?;
        }
        KvCommand::Get { key } => {
            let key = user_key(&key)?;
            let mut results = batch(&client, vec![Op::Get { key: key.clone() }]).await?;
            match results.pop().and_then(|r| r.value) {
                Some(value) => println!("{}", String::from_utf8_lossy(&value)),
                None => return Err(Error::NotFound(format!("key {} not found", keys::pretty(&key)))),
            }
        }
        KvCommand::Scan { start, end, limit } => {
            let op = Op::Scan { start: user_key(&start)?, end: user_key(&end)?, limit };
            for (key, value) in batch(&client, vec![op]).await?.remove(0).rows {
                println!("{}\t{}", keys::pretty(&key), String::from_utf8_lossy(&value));
            }
        }
        KvCommand::Split { key } => {
            let mut kv = pb::kv_service_client::KvServiceClient::new(connect(&client).await?);
            let reply = kv
                .admin_split(pb::AdminSplitRequest { split_key: user_key(&key)?.into(), forwarded: false })
                .await?
                .into_inner();
            println!("split: r{} | r{}", reply.left_range_id, reply.right_range_id);
        }
    }
    Ok(())
}

/// `ranged node ...`.
pub async fn node(client: ClientArgs, command: NodeCommand) -> Result<(), Error> {
    let mut status = pb::status_service_client::StatusServiceClient::new(connect(&client).await?);
    match command {
        NodeCommand::Status { format, ranges } => {
            let nodes = status.nodes(pb::NodesRequest {}).await?.into_inner().nodes;
            print_nodes(&nodes, format, ranges);
        }
        NodeCommand::Ranges { format, hot, limit } => {
            let ranges = match hot {
                Some(metric) => {
                    let request = pb::HotRangesRequest { limit, sort_by: pb::HotRangesSort::from(metric) as i32 };
                    status.hot_ranges(request).await?.into_inner().ranges
                }
                None => {
                    status
                        .ranges(pb::RangesRequest { range_ids: Vec::new(), ..Default::default() })
                        .await?
                        .into_inner()
                        .ranges
                }
            };
            print_ranges(&ranges, format);
        }
        NodeCommand::Decommission { node_ids, wait, format } => {
            let mut nodes = pb::node_service_client::NodeServiceClient::new(connect(&client).await?);
            let request = |target: pb::MembershipStatus| pb::DecommissionRequest {
                node_ids: node_ids.clone(),
                target: target as i32,
            };
            let mut status = nodes.decommission(request(pb::MembershipStatus::Decommissioning)).await?.into_inner();
            if wait == Wait::None {
                print_decommission(&status.status, format);
                return Ok(());
            }
            // CockroachDB's loop: report the replicas left until none are, then mark the
            // nodes decommissioned. Replicas move at the pace of snapshots: no deadline.
            let mut last = None;
            while status.status.iter().any(|s| s.replica_count > 0) {
                let left: i64 = status.status.iter().map(|s| s.replica_count).sum();
                if last != Some(left) && format == Format::Table {
                    print_decommission(&status.status, format);
                    last = Some(left);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                status = nodes.decommission(request(pb::MembershipStatus::Unspecified)).await?.into_inner();
            }
            let status = nodes.decommission(request(pb::MembershipStatus::Decommissioned)).await?.into_inner();
            print_decommission(&status.status, format);
            if format == Format::Table {
                println!(
                    "\nNo more data reported on target nodes. Please verify cluster health before removing the nodes."
                );
            }
        }
        NodeCommand::Recommission { node_ids } => {
            let mut nodes = pb::node_service_client::NodeServiceClient::new(connect(&client).await?);
            let request = pb::DecommissionRequest { node_ids, target: pb::MembershipStatus::Active as i32 };
            let status = nodes.decommission(request).await?.into_inner();
            print_decommission(&status.status, Format::Table);
            println!("The affected nodes must be restarted for the change to take effect.");
        }
    }
    Ok(())
}

/// `ranged cert ...`: writes certificate files; no node involved.
pub fn cert(args: CertArgs, command: CertCommand) -> Result<(), Error> {
    let ca_key = args.ca_key.clone().unwrap_or_else(|| args.certs_dir.join(CA_KEY));
    match command {
        CertCommand::CreateCa => certs::create_ca(&args.certs_dir, &ca_key, args.overwrite)?,
        CertCommand::CreateNode { hosts } => certs::create_node(&args.certs_dir, &ca_key, &hosts, args.overwrite)?,
        CertCommand::CreateClient { user } => certs::create_client(&args.certs_dir, &ca_key, &user, args.overwrite)?,
    }
    Ok(())
}

/// `ranged workload run ...`: runs until `--duration` or Ctrl-C; fails if any operation did.
pub async fn workload(command: WorkloadCommand) -> Result<(), String> {
    let WorkloadCommand::Run { workload: Workload::Kv(args) } = command;
    let KvArgs { url, concurrency, duration, read_percent, distribution, max_rate, keys, value_bytes, display_every } =
        args;
    let options = crate::workload::KvOptions {
        url,
        concurrency,
        duration,
        read_percent,
        distribution,
        max_rate,
        keys,
        value_bytes,
        display_every,
        print: true,
    };
    let summary = crate::workload::run_kv(options, shutdown_signal()).await?;
    if summary.errors > 0 {
        return Err(format!("{} operations failed", summary.errors));
    }
    Ok(())
}

/// `ranged bench ...`.
pub async fn bench(command: BenchCommand) -> Result<(), String> {
    match command {
        BenchCommand::Latency { url, grpc_hot_ranges, pg_upsert, etcd_put, limit, keys, connections, duration } => {
            let target = match (url, grpc_hot_ranges, pg_upsert, etcd_put) {
                (Some(url), None, None, None) => crate::bench::Target::Http(url),
                (None, Some(address), None, None) => crate::bench::Target::GrpcHotRanges { address, limit },
                (None, None, Some(url), None) => crate::bench::Target::PgUpsert { url, keys },
                (None, None, None, Some(address)) => crate::bench::Target::EtcdPut { address, keys },
                _ => return Err("give one of --url, --grpc-hot-ranges, --pg-upsert or --etcd-put".into()),
            };
            print_latency(&crate::bench::latency(target, connections, duration).await?);
        }
        BenchCommand::Fanout { nodes, endpoints, connections, duration } => {
            let paths = match endpoints {
                None => crate::bench::fanout(nodes, connections, duration).await?,
                Some(endpoints) => crate::bench::fanout_endpoints(nodes, endpoints, connections, duration).await?,
            };
            for p in paths {
                print_path_latency(&p);
            }
        }
        BenchCommand::HotRanges { ranges, connections, duration } => {
            print_path_latency(&crate::bench::hot_ranges(ranges, connections, duration).await?);
        }
        BenchCommand::Wal { dir, batch, writers, record_size, duration } => {
            println!("batch writers records_per_s mb_per_s writes_per_s p50_ms p99_ms");
            for batch in batch {
                let r = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || crate::wal_bench::run(&dir, batch, writers, record_size, duration)
                })
                .await
                .map_err(|e| e.to_string())??;
                let seconds = r.elapsed.as_secs_f64();
                println!(
                    "{} {} {:.0} {:.2} {:.0} {:.3} {:.3}",
                    r.batch,
                    r.writers,
                    r.records as f64 / seconds,
                    r.bytes as f64 / seconds / 1e6,
                    r.writes as f64 / seconds,
                    r.p50.as_secs_f64() * 1e3,
                    r.p99.as_secs_f64() * 1e3
                );
            }
        }
        BenchCommand::RaftGroups { groups, nodes, seconds, dir } => {
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            let options =
                crate::raft_groups_bench::RaftGroupsOptions { groups, nodes, window: Duration::from_secs(seconds) };
            println!("{}", crate::raft_groups_bench::run(&dir, options).await?);
        }
    }
    Ok(())
}
