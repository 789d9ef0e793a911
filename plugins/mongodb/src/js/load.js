// Restore and the writing side of copy: reads envsync's artifact format on
// stdin into shadow collections (`__envsync_new_<name>`) of the target
// database, checks every count and builds the indexes on them. Nothing live
// is touched: swap.js makes the shadows live once the plugin has verified
// the artifact. Prints one JSON line: what was loaded.
const db = envsyncConnect();
for (const name of shadowCollections(db)) db.getCollection(name).drop();

function bad(lines, message) {
  throw new Error('bad artifact, line ' + lines.number + ': ' + message);
}

// A marker line: plain JSON, but a collection header's options and indexes
// are canonical Extended JSON (validators may hold dates or regexes).
function parseMarker(lines, line) {
  let marker;
  try {
    marker = JSON.parse(line);
    if (marker.$envsync === 'collection') marker = EJSON.parse(line, CANONICAL);
  } catch (e) {
    bad(lines, 'not JSON: ' + e.message);
  }
  return marker;
}

const lines = new Lines();
const first = lines.next();
if (first === null) throw new Error('bad artifact: it is empty');
const head = parseMarker(lines, first);
if (head.$envsync !== 'mongodb' || (head.format !== 1 && head.format !== 2)) {
  bad(lines, 'not an envsync MongoDB artifact (format 1 or 2)');
}
// Format 1 (a backup): each collection's documents between its header and
// its end line. Format 2 (a sanitised backup, written by the host):
// headers, then runs of documents each announced with its collection and
// count. Either way a collection is finished (counted, indexed) only once
// all of it is in.
const sanitised = head.format === 2;
const collections = new Map();
const loaded = [];
let current = null;
let run = 0;
let batch = [];
let batchBytes = 0;
let documents = 0;
let end = null;

function flush() {
  if (batch.length === 0) return;
  current.coll.insertMany(batch, { ordered: true, bypassDocumentValidation: true });
  batch = [];
  batchBytes = 0;
}

function startCollection(marker) {
  if (typeof marker.name !== 'string' || marker.name === '' || marker.name.startsWith('system.') ||
      marker.name.startsWith('__envsync_')) {
    bad(lines, 'invalid collection name ' + JSON.stringify(marker.name));
  }
  if (collections.has(marker.name)) bad(lines, 'collection ' + marker.name + ' appears twice');
  const shadow = SHADOW + marker.name;
  const created = db.runCommand(Object.assign({ create: shadow }, marker.options || {}));
  if (created.ok !== 1) {
    throw new Error('creating ' + shadow + ' failed: ' + JSON.stringify(created));
  }
  const c = { name: marker.name, shadow: shadow, coll: db.getCollection(shadow),
    indexes: marker.indexes || [], count: 0 };
  collections.set(marker.name, c);
  return c;
}

// Checks a whole collection's count on the shadow and builds its indexes.
function finishCollection(c) {
  const stored = c.coll.countDocuments({});
  if (stored !== c.count) {
    throw new Error('collection ' + c.name + ': loaded ' + c.count +
      ' documents but the shadow collection counts ' + stored);
  }
  const indexes = c.indexes.filter((ix) => ix.name !== '_id_').map((ix) => {
    const spec = Object.assign({}, ix);
    delete spec.v;
    return spec;
  });
  if (indexes.length > 0) {
    const result = db.runCommand({ createIndexes: c.shadow, indexes: indexes });
    if (result.ok !== 1) {
      throw new Error('collection ' + c.name + ': creating its indexes failed: ' + JSON.stringify(result));
    }
  }
  loaded.push({ name: c.name, shadow: c.shadow, documents: c.count });
}

function marker1(marker) {
  if (marker.$envsync === 'collection') {
    if (current !== null) bad(lines, 'collection ' + marker.name + ' starts inside ' + current.name);
    current = startCollection(marker);
  } else if (marker.$envsync === 'end-collection') {
    if (current === null) bad(lines, 'end of collection ' + marker.name + ' outside any collection');
    flush();
    if (marker.name !== current.name) {
      bad(lines, 'end of collection ' + marker.name + ' inside collection ' + current.name);
    }
    if (marker.documents !== current.count) {
      bad(lines, 'collection ' + current.name + ' should have ' + marker.documents +
        ' documents, the artifact holds ' + current.count);
    }
    finishCollection(current);
    current = null;
  } else if (marker.$envsync === 'end') {
    if (current !== null) bad(lines, 'the end line comes inside collection ' + current.name);
    end = marker;
  } else {
    bad(lines, 'unknown marker ' + JSON.stringify(marker.$envsync));
  }
}

function marker2(marker) {
  if (marker.$envsync === 'collection') {
    startCollection(marker);
  } else if (marker.$envsync === 'documents') {
    const c = collections.get(marker.name);
    if (c === undefined) {
      bad(lines, 'documents of collection ' + JSON.stringify(marker.name) +
        ' before its header (did the sanitiser drop the header?)');
    }
    if (!Number.isInteger(marker.documents) || marker.documents < 1) {
      bad(lines, 'a run of ' + JSON.stringify(marker.documents) + ' documents');
    }
    if (current !== c) flush();
    current = c;
    run = marker.documents;
  } else if (marker.$envsync === 'end') {
    flush();
    for (const c of collections.values()) finishCollection(c);
    end = { collections: collections.size, documents: documents };
  } else {
    bad(lines, 'unknown marker ' + JSON.stringify(marker.$envsync));
  }
}

for (;;) {
  const line = lines.next();
  if (line === null) break;
  if (end !== null) bad(lines, 'data after the end line');
  // In format 2 the lines a run announces are documents, whatever they
  // start with (the sanitiser may have reordered their keys).
  if (run === 0 && line.startsWith('{"$envsync":')) {
    const marker = parseMarker(lines, line);
    if (sanitised) marker2(marker);
    else marker1(marker);
    continue;
  }
  if (current === null) bad(lines, 'a document outside any collection');
  if (sanitised) {
    if (run === 0) bad(lines, 'a document outside any run of documents');
    run -= 1;
  }
  let doc;
  try {
    doc = EJSON.parse(line, CANONICAL);
  } catch (e) {
    bad(lines, 'a document that is not Extended JSON: ' + e.message);
  }
  batch.push(doc);
  batchBytes += line.length;
  current.count += 1;
  documents += 1;
  if (batch.length >= ENVSYNC.batchSize || batchBytes >= ENVSYNC.batchBytes) flush();
}
if (end === null) throw new Error('bad artifact: it has no end line, so it is cut off');
if (end.collections !== loaded.length || end.documents !== documents) {
  throw new Error('bad artifact: its end line counts ' + end.collections + ' collections and ' +
    end.documents + ' documents, it holds ' + loaded.length + ' and ' + documents);
}
writeAll(1, Buffer.from(JSON.stringify({ collections: loaded, documents: documents }) + '\n'));
