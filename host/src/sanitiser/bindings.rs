//! Host-side bindings of the `sanitiser` world of `envsync:plugin@0.3.0`.

wasmtime::component::bindgen!({
    path: "../wit/v0.3.0",
    world: "sanitiser",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use envsync::plugin::types::Error as SanitiserError;
pub use exports::envsync::plugin::sanitise::{RunContext, SanitiserInfo};
