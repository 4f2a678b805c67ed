//! Nothing but a home for the comparison benchmarks in `benches/`: CADA's Nitro and SEV-SNP
//! verifiers and its parsers, measured against the peer crates in the same run.
#![forbid(unsafe_code)]
