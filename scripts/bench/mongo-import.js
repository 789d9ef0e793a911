// Plain baseline of the `mongo` benchmark, restore side: the file
// $BENCH_FILE written by mongo-export.js into the database mongosh is
// connected to (expected empty): each collection created with its options,
// its documents inserted with insertMany in batches of 1,000, its count
// checked with countDocuments, then its indexes built. No shadow collections
// and no swap. Prints the number of documents inserted.
const fs = require('fs');
const { StringDecoder } = require('string_decoder');
const CANONICAL = { relaxed: false };
const fd = fs.openSync(process.env.BENCH_FILE, 'r');
const buf = Buffer.alloc(1 << 20);
const decoder = new StringDecoder('utf8');
let current = null;
let batch = [];
let documents = 0;
function insertBatch() {
  if (batch.length === 0) return;
  current.coll.insertMany(batch, { ordered: true, bypassDocumentValidation: true });
  batch = [];
}
function finishCollection() {
  if (current === null) return;
  insertBatch();
  const counted = current.coll.countDocuments({});
  if (counted !== current.count) {
    throw new Error(current.name + ': inserted ' + current.count + ' documents, the collection counts ' + counted);
  }
  const indexes = current.indexes.filter((ix) => ix.name !== '_id_').map((ix) => {
    const spec = Object.assign({}, ix);
    delete spec.v;
    delete spec.ns;
    return spec;
  });
  if (indexes.length > 0) {
    const res = db.runCommand({ createIndexes: current.name, indexes: indexes });
    if (res.ok !== 1) throw new Error(current.name + ': createIndexes failed: ' + JSON.stringify(res));
  }
  current = null;
}
function handle(line) {
  const value = EJSON.parse(line, CANONICAL);
  if (!('_id' in value) && typeof value.collection === 'string') {
    finishCollection();
    const res = db.runCommand(Object.assign({ create: value.collection }, value.options));
    if (res.ok !== 1) throw new Error('create ' + value.collection + ' failed: ' + JSON.stringify(res));
    current = { name: value.collection, coll: db.getCollection(value.collection), indexes: value.indexes, count: 0 };
    return;
  }
  if (current === null) throw new Error('a document before any collection header');
  batch.push(value);
  current.count += 1;
  documents += 1;
  if (batch.length >= 1000) insertBatch();
}
let rest = '';
for (;;) {
  const n = fs.readSync(fd, buf, 0, buf.length, null);
  if (n === 0) break;
  const lines = (rest + decoder.write(buf.subarray(0, n))).split('\n');
  rest = lines.pop();
  for (const line of lines) handle(line);
}
rest += decoder.end();
if (rest.length > 0) throw new Error('the file ends in the middle of a line');
finishCollection();
fs.closeSync(fd);
print(documents);
