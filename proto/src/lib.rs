//! Generated gRPC contracts of medins, plus the file descriptor set for server reflection.

/// `medins.identity.v1`: persons, SMS codes, real name, partner links, tokens, face sessions.
pub mod identity {
    /// Version 1 of the identity contracts.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("medins.identity.v1");
    }
}

/// `medins.insurance.v1`: accounts, vouchers, codes, settlement, family, documents, cards.
pub mod insurance {
    /// Version 1 of the insurance contracts.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("medins.insurance.v1");
    }
}

/// `medins.bench.v1`: the echo service `medins bench` measures its ceiling with.
pub mod bench {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("medins.bench.v1");
    }
}

/// Encoded `FileDescriptorSet` of every medins proto, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/medins_descriptor.bin"));

/// Encoded `FileDescriptorSet` of `google.rpc` error details (ErrorInfo, RetryInfo,
/// BadRequest), so reflection clients can decode the details medins errors carry.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/error_details_descriptor.bin"));
