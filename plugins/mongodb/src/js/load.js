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
if (head.$envsync !== 'mongodb' || head.format !== 1) {
  bad(lines, 'not an envsync MongoDB artifact (format 1)');
}
const loaded = [];
let current = null;
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

function finishCollection(marker) {
  flush();
  if (marker.name !== current.name) {
    bad(lines, 'end of collection ' + marker.name + ' inside collection ' + current.name);
  }
  if (marker.documents !== current.count) {
    bad(lines, 'collection ' + current.name + ' should have ' + marker.documents +
      ' documents, the artifact holds ' + current.count);
  }
  const stored = current.coll.countDocuments({});
  if (stored !== current.count) {
    throw new Error('collection ' + current.name + ': loaded ' + current.count +
      ' documents but the shadow collection counts ' + stored);
  }
  const indexes = current.indexes.filter((ix) => ix.name !== '_id_').map((ix) => {
    const spec = Object.assign({}, ix);
    delete spec.v;
    return spec;
  });
  if (indexes.length > 0) {
    const result = db.runCommand({ createIndexes: current.shadow, indexes: indexes });
    if (result.ok !== 1) {
      throw new Error('collection ' + current.name + ': creating its indexes failed: ' + JSON.stringify(result));
    }
  }
  loaded.push({ name: current.name, shadow: current.shadow, documents: current.count });
  current = null;
}

for (;;) {
  const line = lines.next();
  if (line === null) break;
  if (end !== null) bad(lines, 'data after the end line');
  if (line.startsWith('{"$envsync":')) {
    const marker = parseMarker(lines, line);
    if (marker.$envsync === 'collection') {
      if (current !== null) bad(lines, 'collection ' + marker.name + ' starts inside ' + current.name);
      if (typeof marker.name !== 'string' || marker.name === '' || marker.name.startsWith('system.') ||
          marker.name.startsWith('__envsync_')) {
        bad(lines, 'invalid collection name ' + JSON.stringify(marker.name));
      }
      if (loaded.some((c) => c.name === marker.name)) bad(lines, 'collection ' + marker.name + ' appears twice');
      const shadow = SHADOW + marker.name;
      const created = db.runCommand(Object.assign({ create: shadow }, marker.options || {}));
      if (created.ok !== 1) {
        throw new Error('creating ' + shadow + ' failed: ' + JSON.stringify(created));
      }
      current = { name: marker.name, shadow: shadow, coll: db.getCollection(shadow),
        indexes: marker.indexes || [], count: 0 };
    } else if (marker.$envsync === 'end-collection') {
      if (current === null) bad(lines, 'end of collection ' + marker.name + ' outside any collection');
      finishCollection(marker);
    } else if (marker.$envsync === 'end') {
      if (current !== null) bad(lines, 'the end line comes inside collection ' + current.name);
      end = marker;
    } else {
      bad(lines, 'unknown marker ' + JSON.stringify(marker.$envsync));
    }
    continue;
  }
  if (current === null) bad(lines, 'a document outside any collection');
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
