//! Exists so `agent` can take a build-dependency on this crate (cargo then rebuilds the agent when
//! the kernel programs change); the programs themselves are the `fhirwall` binary target.
#![no_std]
