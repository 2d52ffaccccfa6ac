//! `holdfast-cli`: the library behind the `holdfast` binary.
//!
//! [`inspect`] and [`check`] read a stable-memory image read-only through
//! [`image_file::ImageFile`] and build plain reports ([`timeline`] regroups a
//! ledger's history by generation); [`render`] shows them as tables or JSON
//! and [`html`] as one self-contained page; [`run`] runs a node and
//! [`client`] talks to one over HTTP; [`bundle`] signs plugin bundles and
//! verifies their signatures; [`demo`] tells the node's story (hot
//! reload, crash, broken bundle) and then plays the three-release
//! stable-memory demo. The
//! binary (`main.rs`) only parses arguments, prints, and maps outcomes to
//! exit codes ([`error`]).
#![forbid(unsafe_code)]

pub mod bundle;
pub mod check;
pub mod client;
pub mod demo;
mod demo_node;
pub mod error;
pub mod html;
pub mod image_file;
pub mod inspect;
pub mod render;
pub mod run;
pub mod timeline;

pub use check::{CheckReport, check};
pub use error::{CliError, EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE};
pub use inspect::{InspectReport, inspect};
