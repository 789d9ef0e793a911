//! Host-side bindings of the `sanitiser` world of `envsync:plugin@0.2.0`.

wasmtime::component::bindgen!({
    path: "../wit/v0.2.0",
    world: "sanitiser",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use envsync::plugin::types::Error as SanitiserError;
pub use exports::envsync::plugin::sanitise::{RunContext, SanitiserInfo};
