//! Binary encodings of the Raft layer. Log entries are the protobuf `LogEntry` envelope and
//! commands the protobuf `RaftCommand` (proto/ranged/v1/raft.proto); openraft's own types
//! (vote, log ids, membership, RPC structs) are carried in postcard, a compact serde format.
//! A [`Command`] serialises through serde as its protobuf bytes, so an openraft RPC that
//! carries entries carries each command exactly as the log stores it. A store records the
//! format it was written in ([`crate::services::engine::STORE_FORMAT`]).

use prost::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pb;
use crate::services::kv::Op;
use crate::services::raft::{Command, Entry, LogId};

/// Encodes an openraft value in postcard (in JSON in the `bench-json-raft` measurement build).
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    if cfg!(feature = "bench-json-raft") {
        return serde_json::to_vec(value).map_err(|err| format!("encoding: {err}"));
    }
    postcard::to_stdvec(value).map_err(|err| format!("encoding: {err}"))
}

/// Decodes an openraft value from postcard (from JSON in the `bench-json-raft` build).
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if cfg!(feature = "bench-json-raft") {
        return serde_json::from_slice(bytes).map_err(|err| format!("decoding: {err}"));
    }
    postcard::from_bytes(bytes).map_err(|err| format!("decoding: {err}"))
}

/// The JSON encoding before issue #12, kept only to measure the binary one against it (the
/// `bench-json-raft` feature): commands as serde derives them, so every key and value byte is
/// a decimal number in an array, as it was.
mod json {
    use serde::{Deserialize, Serialize};

    use crate::services::kv::Op;
    use crate::services::raft::Command;

    #[derive(Serialize, Deserialize)]
    enum JsonCommand {
        Batch(Vec<Op>),
        Split { split_key: Vec<u8>, right_range_id: u64 },
    }

    pub fn to_json<S: serde::Serializer>(command: &Command, serializer: S) -> Result<S::Ok, S::Error> {
        match command {
            Command::Batch(ops) => JsonCommand::Batch(ops.clone()),
            Command::Split { split_key, right_range_id } => {
                JsonCommand::Split { split_key: split_key.clone(), right_range_id: *right_range_id }
            }
        }
        .serialize(serializer)
    }

    pub fn from_json<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Command, D::Error> {
        Ok(match JsonCommand::deserialize(deserializer)? {
            JsonCommand::Batch(ops) => Command::Batch(ops),
            JsonCommand::Split { split_key, right_range_id } => Command::Split { split_key, right_range_id },
        })
    }
}

impl Command {
    fn to_proto(&self) -> pb::RaftCommand {
        use pb::raft_command::Command as P;
        let command = match self {
            Command::Batch(ops) => P::Batch(pb::CommandBatch { ops: ops.iter().cloned().map(Into::into).collect() }),
            Command::Split { split_key, right_range_id } => {
                P::Split(pb::CommandSplit { split_key: split_key.clone().into(), right_range_id: *right_range_id })
            }
        };
        pb::RaftCommand { command: Some(command) }
    }

    fn from_proto(command: pb::RaftCommand) -> Result<Self, String> {
        use pb::raft_command::Command as P;
        match command.command.ok_or("command missing")? {
            P::Batch(batch) => Ok(Command::Batch(
                batch.ops.into_iter().map(Op::try_from).collect::<Result<_, _>>().map_err(|err| err.to_string())?,
            )),
            P::Split(split) => {
                Ok(Command::Split { split_key: split.split_key.to_vec(), right_range_id: split.right_range_id })
            }
        }
    }

    /// The command's protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes a command's protobuf bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        Self::from_proto(pb::RaftCommand::decode(bytes).map_err(|err| format!("bad command: {err}"))?)
    }
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if cfg!(feature = "bench-json-raft") {
            return json::to_json(self, serializer);
        }
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if cfg!(feature = "bench-json-raft") {
            return json::from_json(deserializer);
        }
        let bytes: serde_bytes_buf::Buf = Deserialize::deserialize(deserializer)?;
        Command::decode(&bytes.0).map_err(serde::de::Error::custom)
    }
}

/// Byte buffers through serde without a crate for it: accepts bytes or a sequence of u8.
mod serde_bytes_buf {
    use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

    pub struct Buf(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Buf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                    while let Some(byte) = seq.next_element::<u8>()? {
                        out.push(byte);
                    }
                    Ok(Buf(out))
                }
            }
            deserializer.deserialize_byte_buf(V)
        }
    }
}

/// Encodes a log entry as the `LogEntry` envelope (as openraft's serde form in JSON in the
/// `bench-json-raft` measurement build).
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, String> {
    if cfg!(feature = "bench-json-raft") {
        return to_bytes(entry);
    }
    use pb::log_entry::Payload as P;
    let payload = match &entry.payload {
        openraft::EntryPayload::Blank => P::Blank(pb::BlankEntry {}),
        openraft::EntryPayload::Normal(command) => P::Command(command.to_proto()),
        openraft::EntryPayload::Membership(membership) => P::Membership(to_bytes(membership)?.into()),
    };
    let envelope = pb::LogEntry {
        term: entry.log_id.leader_id.term,
        leader_node: entry.log_id.leader_id.node_id,
        index: entry.log_id.index,
        payload: Some(payload),
    };
    Ok(envelope.encode_to_vec())
}

/// Decodes a `LogEntry` envelope (JSON in the `bench-json-raft` build).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    if cfg!(feature = "bench-json-raft") {
        return from_bytes(bytes);
    }
    use pb::log_entry::Payload as P;
    let envelope = pb::LogEntry::decode(bytes).map_err(|err| format!("bad log entry: {err}"))?;
    let payload = match envelope.payload.ok_or("log entry without payload")? {
        P::Blank(_) => openraft::EntryPayload::Blank,
        P::Command(command) => openraft::EntryPayload::Normal(Command::from_proto(command)?),
        P::Membership(bytes) => openraft::EntryPayload::Membership(from_bytes(&bytes)?),
    };
    let log_id = LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term: envelope.term, node_id: envelope.leader_node },
        envelope.index,
    );
    Ok(Entry { log_id, payload })
}

#[cfg(all(test, not(feature = "bench-json-raft")))]
mod tests {
    use super::*;

    fn upsert_entry() -> Entry {
        // A single-row UPSERT: one table row key and its encoded row (as the SQL layer writes).
        let key = b"/Table/104/1/\x12customer-000042\x00\x01".to_vec();
        let value = vec![7u8; 64];
        let log_id = LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 3, node_id: 1 }, 12_345);
        Entry { log_id, payload: openraft::EntryPayload::Normal(Command::Batch(vec![Op::Put { key, value }])) }
    }

    #[test]
    fn entries_round_trip_and_are_compact() {
        let entry = upsert_entry();
        let bytes = encode_entry(&entry).unwrap();
        let back = decode_entry(&bytes).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        assert_eq!(format!("{:?}", back.payload), format!("{:?}", entry.payload));
        // What openraft's serde derive makes of the same entry in JSON (the format before).
        #[derive(Serialize)]
        enum JsonCommand {
            Batch(Vec<Op>),
        }
        let openraft::EntryPayload::Normal(Command::Batch(ops)) = &entry.payload else { unreachable!() };
        let json = serde_json::json!({
            "log_id": entry.log_id,
            "payload": { "Normal": JsonCommand::Batch(ops.clone()) },
        });
        let json_len = serde_json::to_vec(&json).unwrap().len();
        println!("single-row UPSERT entry: {} bytes JSON, {} bytes binary", json_len, bytes.len());
        assert!(bytes.len() * 3 < json_len, "{} vs {json_len}", bytes.len());
        assert!(decode_entry(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn rpc_payloads_carry_commands_as_their_protobuf() {
        let entry = upsert_entry();
        let bytes = to_bytes(&entry).unwrap();
        let back: Entry = from_bytes(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entry:?}"));
        let openraft::EntryPayload::Normal(command) = &entry.payload else { unreachable!() };
        let command_bytes = command.encode();
        assert!(bytes.windows(command_bytes.len()).any(|w| w == command_bytes.as_slice()));
    }
}
