//! The write-ahead log (`services/wal`) from outside: compared with a model over random
//! operations and reopenings, cut at every byte of its last segment, damaged at random bytes,
//! and killed with SIGKILL while appending.

mod basics;
mod crash;
mod damage;
mod model;
mod model_based;
