// The fields of every collection (dotted paths of the leaves, array
// elements joined like objects), from a scan of its documents, for
// `sanitise check`: one JSON line per collection.
const db = envsyncConnect();

function walk(value, prefix, fields) {
  if (Array.isArray(value)) {
    for (const item of value) walk(item, prefix, fields);
    return;
  }
  const plain = value !== null && typeof value === 'object' &&
    (value.constructor === Object || value.constructor === undefined);
  if (plain && prefix !== '' && Object.keys(value).length === 0) {
    fields.set(prefix, 'object');
    return;
  }
  if (!plain) {
    if (prefix !== '' && !fields.has(prefix)) {
      const kind = value === null ? 'null' : (value._bsontype || typeof value);
      fields.set(prefix, String(kind).toLowerCase());
    }
    return;
  }
  for (const [key, inner] of Object.entries(value)) {
    walk(inner, prefix === '' ? key : prefix + '.' + key, fields);
  }
}

const out = new Out();
for (const info of userCollections(db)) {
  const fields = new Map();
  let cursor = db.getCollection(info.name).find({}).batchSize(ENVSYNC.batchSize);
  while (cursor.hasNext()) walk(cursor.next(), '', fields);
  const unique = new Set();
  for (const ix of db.getCollection(info.name).getIndexes()) {
    const keys = Object.keys(ix.key);
    if ((ix.unique || ix.name === '_id_') && keys.length === 1) unique.add(keys[0]);
  }
  out.line(JSON.stringify({
    name: info.name,
    fields: [...fields.entries()].sort().map(([name, type]) => ({ name, type, unique: unique.has(name) })),
  }));
}
out.flush();
