//! The trait an engine plugin implements, and [`export_engine!`] which
//! exports it as the contract's `operations` interface.

use crate::{ByteSink, ByteSource, Error, Piece, PluginInfo, StructurePart, TableInfo};

/// An engine plugin: one datastore's operations (the contract's
/// `operations` interface, documented in `wit/v0.3.0/worlds.wit`).
///
/// The sanitised-backup calls have defaults that refuse: a plugin that
/// declares no `sanitised_artifact` is never asked for them. A plugin that
/// does implements all three (see `docs/plugins.md`, "Sanitised backups").
pub trait Engine {
    /// What the plugin is and what it needs. Must not call any import.
    fn describe() -> PluginInfo;
    /// Whether `head` (the first bytes of an artifact) is in this plugin's
    /// format.
    fn check(head: Vec<u8>) -> Result<(), Error>;
    /// Dumps the `source` database into `artifact`.
    fn backup(artifact: &ByteSink) -> Result<(), Error>;
    /// Replaces the `target` database with `artifact`, safely.
    fn restore(artifact: &ByteSource) -> Result<(), Error>;
    /// Runs `script` against the `target` database.
    fn transform(script: &ByteSource) -> Result<(), Error>;
    /// Copies `source` into `target` directly.
    fn copy() -> Result<(), Error>;
    /// Lists the tables and columns of the `source` database.
    fn schema() -> Result<Vec<TableInfo>, Error>;

    /// A sanitised backup's schema before or after its rows, read without
    /// reading any row (the host lets programs run only in their
    /// schema-only form here).
    fn backup_structure(_part: StructurePart, _artifact: &ByteSink) -> Result<(), Error> {
        Err(no_sanitised_backups())
    }

    /// A sanitised backup's rows: every batch goes to
    /// `sanitising::write_rows` (or `write_documents`).
    fn backup_rows() -> Result<(), Error> {
        Err(no_sanitised_backups())
    }

    /// Turns a piece of sanitised data into artifact bytes. Runs with
    /// nothing granted: no parameters, connections, programs or HTTP.
    fn encode(_piece: Piece) -> Result<Vec<u8>, Error> {
        Err(no_sanitised_backups())
    }

    /// Streams `artifact` (and its chunks) out as one dump the datastore's
    /// own tools load. Plugins whose artifacts already are such a dump
    /// need not implement it. `out` is kept only if this returns `Ok` and
    /// `out` was closed (dropped, or handed to a `start_splice` that ended).
    fn export_dump(_artifact: &ByteSource, _out: ByteSink) -> Result<(), Error> {
        Err(Error::Other(
            "this plugin's artifacts are already one dump its datastore's tools load: \
             download the artifact (`backups list` names it) and decode it"
                .into(),
        ))
    }
}

fn no_sanitised_backups() -> Error {
    Error::Other(
        "this plugin makes no sanitised backups (it declares no sanitised artifact format)".into(),
    )
}

/// Exports `$ty` (an [`Engine`]) as the plugin's `operations`.
#[macro_export]
macro_rules! export_engine {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __EnvsyncEngineExport;

        impl $crate::bindings::exports::envsync::plugin::operations::Guest
            for __EnvsyncEngineExport
        {
            fn describe() -> $crate::PluginInfo {
                <$ty as $crate::Engine>::describe()
            }
            fn check(head: ::std::vec::Vec<u8>) -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::check(head)
            }
            fn backup(artifact: &$crate::ByteSink) -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::backup(artifact)
            }
            fn restore(artifact: &$crate::ByteSource) -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::restore(artifact)
            }
            fn transform(script: &$crate::ByteSource) -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::transform(script)
            }
            fn copy() -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::copy()
            }
            fn schema() -> ::std::result::Result<::std::vec::Vec<$crate::TableInfo>, $crate::Error>
            {
                <$ty as $crate::Engine>::schema()
            }
            fn backup_structure(
                part: $crate::StructurePart,
                artifact: &$crate::ByteSink,
            ) -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::backup_structure(part, artifact)
            }
            fn backup_rows() -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::backup_rows()
            }
            fn encode(
                piece: $crate::Piece,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::Error> {
                <$ty as $crate::Engine>::encode(piece)
            }
            fn export_dump(
                artifact: &$crate::ByteSource,
                out: $crate::ByteSink,
            ) -> ::std::result::Result<(), $crate::Error> {
                <$ty as $crate::Engine>::export_dump(artifact, out)
            }
        }

        $crate::bindings::__export_engine_world!(__EnvsyncEngineExport);
    };
}
