//! MessagePack encoding of openraft's messages inside the gRPC payloads. MessagePack is
//! self-describing, so openraft's serde shapes (including its compatibility slots) survive
//! a round trip without a hand-maintained proto mirror.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, tonic::Status> {
    rmp_serde::to_vec(value).map_err(|e| tonic::Status::internal(format!("encode: {e}")))
}

/// Bad bytes from a peer are the peer's fault: INVALID_ARGUMENT, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, tonic::Status> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable payload: {e}")))
}
