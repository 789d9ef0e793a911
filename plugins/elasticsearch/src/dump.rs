//! Reading indices from a cluster: their settings, mappings and aliases,
//! then every document, page by page (point in time + search_after sorted
//! by `_shard_doc` where the cluster has it, else scroll), sanitised on the
//! way when the step sanitises.

use crate::aliases::base_name;
use crate::client::{Cluster, encode};
use crate::format::IndexHeader;
use crate::settings;
use envsync_plugin_sdk::Error;
use envsync_plugin_sdk::bindings::envsync::plugin::sanitising::{self, SanitisePlan};
use serde_json::{Value, json};

/// Receives what is read.
pub trait Consumer {
    fn begin_index(&mut self, header: &IndexHeader) -> Result<(), Error>;
    /// A page of documents: (id, `_source` as JSON text).
    fn documents(&mut self, index: &str, docs: Vec<(String, String)>) -> Result<(), Error>;
    fn end_index(&mut self, index: &str, documents: u64) -> Result<(), Error>;
}

/// How pages are read.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Paging {
    /// Elasticsearch: `POST /INDEX/_pit`.
    PitElastic,
    /// OpenSearch: `POST /INDEX/_search/point_in_time`.
    PitOpenSearch,
    Scroll,
}

pub struct Options {
    pub page_size: u32,
    pub keep_alive: String,
}

/// The concrete, non-system indices `patterns` name, with their headers.
pub fn resolve(cluster: Cluster, patterns: &[String]) -> Result<Vec<IndexHeader>, Error> {
    let path = format!(
        "/{}?expand_wildcards=open&ignore_unavailable=false",
        patterns
            .iter()
            .map(|p| encode(p))
            .collect::<Vec<_>>()
            .join(",")
    );
    let answer = cluster.send("GET", &path, None, false)?;
    if answer.status == 404 {
        return Err(Error::InvalidParam(format!(
            "the {} cluster has no index or alias {}: {}",
            cluster.role,
            patterns.join(","),
            crate::bulk::preview(&answer.body)
        )));
    }
    if !answer.ok() {
        return Err(cluster.failed("GET", &path, &answer));
    }
    let Value::Object(indices) = answer.body else {
        return Err(Error::Other(format!(
            "GET {path}: the answer is not an object"
        )));
    };
    let mut out = Vec::new();
    for (name, v) in indices {
        if name.starts_with('.') {
            continue;
        }
        let field = |k: &str| v.get(k).cloned().unwrap_or_else(|| json!({}));
        out.push(IndexHeader {
            settings: settings::copyable(&field("settings")),
            mappings: field("mappings"),
            aliases: field("aliases"),
            name,
        });
    }
    if out.is_empty() {
        return Err(Error::InvalidParam(format!(
            "{} names no index on the {} cluster (system indices starting with . are skipped)",
            patterns.join(","),
            cluster.role
        )));
    }
    Ok(out)
}

/// Reads every index `patterns` names into `consumer`, passing the
/// documents of the indices `plan` names through the sanitiser on the way
/// (None: unchanged; a sanitised backup's consumer hands them to the host,
/// which sanitises them itself). Returns the number of indices and
/// documents.
pub fn dump(
    cluster: Cluster,
    patterns: &[String],
    options: &Options,
    plan: Option<SanitisePlan>,
    consumer: &mut dyn Consumer,
) -> Result<(u64, u64), Error> {
    let headers = resolve(cluster, patterns)?;
    let mut paging = None;
    let mut total = 0;
    for header in &headers {
        consumer.begin_index(header)?;
        let base = base_name(&header.name).to_string();
        let sanitise = plan.as_ref().is_some_and(|p| {
            p.tables
                .as_ref()
                .is_none_or(|t| t.iter().any(|n| n == &base || n == &header.name))
        });
        let mut read = 0u64;
        let mut kept = 0u64;
        let mut page = |docs: Vec<(String, String)>| -> Result<(), Error> {
            read += docs.len() as u64;
            let docs = if sanitise {
                sanitised(&base, docs)?
            } else {
                docs
            };
            kept += docs.len() as u64;
            envsync_plugin_sdk::log::progress("documents", total + read, None);
            consumer.documents(&header.name, docs)
        };
        let mode = match paging {
            Some(m) => m,
            None => {
                let m = detect(cluster, &header.name, options)?;
                envsync_plugin_sdk::info(format!("reading pages with {m:?}"));
                paging = Some(m);
                m
            }
        };
        match mode {
            Paging::Scroll => scroll(cluster, &header.name, options, &mut page)?,
            pit => pit_pages(cluster, &header.name, pit, options, &mut page)?,
        }
        total += read;
        consumer.end_index(&header.name, kept)?;
        envsync_plugin_sdk::info(format!(
            "{}: {read} documents read{}",
            header.name,
            if sanitise {
                format!(", {kept} kept by the sanitiser")
            } else {
                String::new()
            }
        ));
    }
    Ok((headers.len() as u64, total))
}

/// Passes documents through the sanitiser. Each document goes as its
/// `_source` with the `_id` added as a top-level `_id` key (a sanitiser may
/// mask ids too, and may drop documents); the `_id` is taken back out.
fn sanitised(index: &str, docs: Vec<(String, String)>) -> Result<Vec<(String, String)>, Error> {
    let texts = docs
        .into_iter()
        .map(|(id, source)| with_id(&id, &source))
        .collect::<Result<Vec<_>, _>>()?;
    let out = sanitising::transform_documents(index, &texts)
        .map_err(|e| e.context(format!("sanitising index {index}")))?;
    out.iter().map(|doc| split_id(index, doc)).collect()
}

/// `source` (a JSON object) with `"_id": id` added.
pub fn with_id(id: &str, source: &str) -> Result<String, Error> {
    let mut v: Value = serde_json::from_str(source)
        .map_err(|e| Error::Other(format!("document {id}: _source is not JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::Other(format!(
            "document {id}: _source is not an object"
        )));
    };
    obj.insert("_id".into(), Value::from(id));
    Ok(v.to_string())
}

/// Splits a sanitised document into its `_id` and `_source`.
pub fn split_id(index: &str, doc: &str) -> Result<(String, String), Error> {
    let mut v: Value = serde_json::from_str(doc).map_err(|e| {
        Error::Other(format!(
            "index {index}: the sanitiser returned a document that is not JSON: {e}"
        ))
    })?;
    let id = v
        .as_object_mut()
        .and_then(|o| o.remove("_id"))
        .and_then(|id| id.as_str().map(String::from))
        .ok_or_else(|| {
            Error::Other(format!(
                "index {index}: the sanitiser returned a document without its string _id"
            ))
        })?;
    Ok((id, v.to_string()))
}

/// Picks the paging the cluster supports, trying on `index`.
fn detect(cluster: Cluster, index: &str, options: &Options) -> Result<Paging, Error> {
    for mode in [Paging::PitElastic, Paging::PitOpenSearch] {
        if let Ok(Some(id)) = open_pit(cluster, index, mode, options) {
            close_pit(cluster, mode, &id);
            return Ok(mode);
        }
    }
    Ok(Paging::Scroll)
}

fn open_pit(
    cluster: Cluster,
    index: &str,
    mode: Paging,
    options: &Options,
) -> Result<Option<String>, Error> {
    let (path, key) = match mode {
        Paging::PitElastic => (
            format!("/{}/_pit?keep_alive={}", encode(index), options.keep_alive),
            "id",
        ),
        _ => (
            format!(
                "/{}/_search/point_in_time?keep_alive={}",
                encode(index),
                options.keep_alive
            ),
            "pit_id",
        ),
    };
    let answer = cluster.send("POST", &path, None, false)?;
    if !answer.ok() {
        return Ok(None);
    }
    Ok(answer
        .body
        .get(key)
        .and_then(Value::as_str)
        .map(String::from))
}

fn close_pit(cluster: Cluster, mode: Paging, id: &str) {
    let result = match mode {
        Paging::PitElastic => cluster.send(
            "DELETE",
            "/_pit",
            Some(json!({"id": id}).to_string().as_bytes()),
            false,
        ),
        _ => cluster.send(
            "DELETE",
            "/_search/point_in_time",
            Some(json!({"pit_id": [id]}).to_string().as_bytes()),
            false,
        ),
    };
    if let Err(e) = result {
        envsync_plugin_sdk::debug(format!("closing a point in time: {e}"));
    }
}

/// A page of hits as (id, source), and the last sort value.
type Page = (Vec<(String, String)>, Option<Value>);

/// The hits of a search answer.
fn hits(answer: &Value) -> Result<Page, Error> {
    let hits = answer
        .pointer("/hits/hits")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::Other(format!(
                "search answer without hits: {}",
                crate::bulk::preview(answer)
            ))
        })?;
    if let Some(failed) = answer.pointer("/_shards/failed").and_then(Value::as_u64)
        && failed > 0
    {
        return Err(Error::Other(format!(
            "{failed} shard(s) failed during the search, the page would be incomplete: {}",
            crate::bulk::preview(answer.pointer("/_shards").unwrap_or(&Value::Null))
        )));
    }
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        let id = hit.get("_id").and_then(Value::as_str).unwrap_or_default();
        let source = hit.get("_source").ok_or_else(|| {
            Error::Other(format!(
                "document {id} has no _source (disabled in the mapping?): it cannot be copied"
            ))
        })?;
        out.push((id.to_string(), source.to_string()));
    }
    Ok((out, hits.last().and_then(|h| h.get("sort")).cloned()))
}

fn pit_pages(
    cluster: Cluster,
    index: &str,
    mode: Paging,
    options: &Options,
    page: &mut dyn FnMut(Vec<(String, String)>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut id = open_pit(cluster, index, mode, options)?
        .ok_or_else(|| Error::Other(format!("could not open a point in time on {index}")))?;
    let result = (|| {
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({
                "size": options.page_size,
                "pit": {"id": id, "keep_alive": options.keep_alive},
                "sort": [{"_shard_doc": "asc"}],
                "track_total_hits": false,
            });
            if let Some(a) = &after {
                body["search_after"] = a.clone();
            }
            let answer = cluster.call("POST", "/_search", Some(&body))?;
            if let Some(new) = answer
                .get("pit_id")
                .or_else(|| answer.get("id"))
                .and_then(Value::as_str)
            {
                id = new.to_string();
            }
            let (docs, last) = hits(&answer)?;
            if docs.is_empty() {
                return Ok(());
            }
            let full = docs.len() as u32 >= options.page_size;
            page(docs)?;
            if !full {
                return Ok(());
            }
            after =
                Some(last.ok_or_else(|| Error::Other("search hits without sort values".into()))?);
        }
    })();
    close_pit(cluster, mode, &id);
    result
}

fn scroll(
    cluster: Cluster,
    index: &str,
    options: &Options,
    page: &mut dyn FnMut(Vec<(String, String)>) -> Result<(), Error>,
) -> Result<(), Error> {
    let path = format!("/{}/_search?scroll={}", encode(index), options.keep_alive);
    let mut answer = cluster.call(
        "POST",
        &path,
        Some(&json!({"size": options.page_size, "sort": ["_doc"]})),
    )?;
    let mut scroll_id = None;
    let result = (|| loop {
        scroll_id = answer
            .get("_scroll_id")
            .and_then(Value::as_str)
            .map(String::from);
        let (docs, _) = hits(&answer)?;
        if docs.is_empty() {
            return Ok(());
        }
        page(docs)?;
        let id = scroll_id
            .clone()
            .ok_or_else(|| Error::Other("scroll answer without _scroll_id".into()))?;
        answer = cluster.call(
            "POST",
            "/_search/scroll",
            Some(&json!({"scroll": options.keep_alive, "scroll_id": id})),
        )?;
    })();
    if let Some(id) = scroll_id {
        let _ = cluster.send(
            "DELETE",
            "/_search/scroll",
            Some(json!({"scroll_id": [id]}).to_string().as_bytes()),
            false,
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_with_documents_through_the_sanitiser() {
        let doc = with_id("a/1", "{\"email\":\"x@y.z\",\"n\":1}").unwrap();
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["_id"], "a/1");
        let (id, source) = split_id("i", &doc).unwrap();
        assert_eq!(id, "a/1");
        assert_eq!(
            serde_json::from_str::<Value>(&source).unwrap(),
            json!({"email": "x@y.z", "n": 1})
        );
        assert!(
            split_id("i", "{\"n\":1}")
                .unwrap_err()
                .message()
                .contains("without its string _id")
        );
        assert!(with_id("1", "[1]").is_err());
    }

    #[test]
    fn hits_and_sort_values() {
        let answer = json!({"_shards": {"failed": 0}, "hits": {"hits": [
            {"_id": "1", "_source": {"a": 1}, "sort": [0]},
            {"_id": "2", "_source": {"a": 2}, "sort": [5]},
        ]}});
        let (docs, last) = hits(&answer).unwrap();
        assert_eq!(
            docs,
            [
                ("1".to_string(), "{\"a\":1}".to_string()),
                ("2".into(), "{\"a\":2}".into())
            ]
        );
        assert_eq!(last, Some(json!([5])));
        let failed = json!({"_shards": {"failed": 1}, "hits": {"hits": []}});
        assert!(hits(&failed).is_err());
        let no_source = json!({"hits": {"hits": [{"_id": "1"}]}});
        assert!(hits(&no_source).unwrap_err().message().contains("_source"));
    }
}
