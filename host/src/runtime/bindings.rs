//! Host-side bindings of the `envsync:plugin@0.3.0` contract.

wasmtime::component::bindgen!({
    path: "../wit/v0.3.0",
    world: "engine",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "envsync:plugin/streams.byte-source": crate::capabilities::streams::ByteSource,
        "envsync:plugin/streams.byte-sink": crate::capabilities::streams::ByteSink,
        "envsync:plugin/streams.transfer": crate::capabilities::streams::Transfer,
        "envsync:plugin/process.child": crate::capabilities::process::ChildProcess,
    },
});

pub use envsync::plugin::types::{ColumnInfo, Error as WitError, Operation, PluginInfo, TableInfo};
pub use exports::envsync::plugin::operations::{
    IndexDocuments, Piece, StructurePart, TableColumns, TableRows,
};
