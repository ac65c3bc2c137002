//! Frame builders for the pipeline tests: the crate's own [`synth`] module.
#![allow(unused_imports)]
pub use hbgw_dataplane::synth::*;
