//! What the host grants a plugin, one module per WIT interface it imports.
//! Each module holds the host state for its interface and the trait impl the
//! bindings call.

pub mod chunks;
pub mod confine;
pub mod http;
pub mod job;
pub mod log;
pub mod objects;
pub mod parallel_rows;
pub mod process;
pub mod program_policy;
pub mod sanitised_rows;
pub mod sanitising;
pub mod streams;

use crate::runtime::bindings::WitError;

/// Shorthand for the result type every host function returns to the guest:
/// an outer `wasmtime::Result` for traps, an inner typed error for the plugin.
pub(crate) type HostResult<T> = wasmtime::Result<Result<T, WitError>>;

/// `envsync:plugin/types` holds only types; the bindings still want a host
/// impl for it.
impl crate::runtime::bindings::envsync::plugin::types::Host for crate::runtime::sandbox::StepState {}
