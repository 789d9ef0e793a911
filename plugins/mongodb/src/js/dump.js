// Backup and the reading side of copy: the database as envsync's artifact
// format on stdout (format.rs): a format line, then per collection a header
// (options, indexes), its documents in canonical Extended JSON one per line
// and an end line with the count; then an end line with the totals.
const db = envsyncConnect();
const out = new Out();
out.line(JSON.stringify({ $envsync: 'mongodb', format: 1, database: ENVSYNC.database }));
let documents = 0;
const collections = userCollections(db);
for (const info of collections) {
  const coll = db.getCollection(info.name);
  const indexes = coll.getIndexes().map((ix) => {
    const spec = Object.assign({}, ix);
    delete spec.ns;
    return spec;
  });
  out.line(EJSON.stringify(
    { $envsync: 'collection', name: info.name, options: info.options || {}, indexes: indexes },
    CANONICAL));
  let cursor = coll.find({}).batchSize(ENVSYNC.batchSize);
  if (ENVSYNC.readConcern) cursor = cursor.readConcern(ENVSYNC.readConcern);
  let n = 0;
  cursor.forEach((doc) => {
    out.line(EJSON.stringify(doc, CANONICAL));
    n += 1;
  });
  documents += n;
  out.line(JSON.stringify({ $envsync: 'end-collection', name: info.name, documents: n }));
}
out.line(JSON.stringify({ $envsync: 'end', collections: collections.length, documents: documents }));
out.flush();
