//! cairn's sans-IO protocol state machines.
//!
//! Every machine here takes inputs with the current time (`now`) and returns actions; none does
//! I/O, reads a clock, spawns tasks or draws randomness it was not given. The async drivers in
//! `cairn-net` / `cairn-node` translate between these values and sockets, timers and the store,
//! and the simulator drives the very same code.
//!
//! - [`download`]: the multi-peer block download scheduler;
//! - [`durability`]: the durability layer (swarms, membership, placement, claims, beacons,
//!   anti-entropy, health).

pub mod download;
pub mod durability;
