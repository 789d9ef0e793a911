// Plain baseline of the `mongo` benchmark, backup side: every collection of
// the database (not views, not system.*) into the file $BENCH_FILE as
// canonical Extended JSON, one line each: a header line per collection
// ({"collection": name, "options": …, "indexes": […]}, no `_id`), then its
// documents. Uncompressed; written in pieces of about 1 MiB. Prints the
// number of documents written.
const fs = require('fs');
const CANONICAL = { relaxed: false };
const fd = fs.openSync(process.env.BENCH_FILE, 'w');
let pending = [];
let pendingBytes = 0;
function write(line) {
  pending.push(line);
  pendingBytes += line.length + 1;
  if (pendingBytes >= 1 << 20) flush();
}
function flush() {
  if (pending.length === 0) return;
  pending.push('');
  const data = Buffer.from(pending.join('\n'));
  for (let off = 0; off < data.length;) off += fs.writeSync(fd, data, off, data.length - off);
  pending = [];
  pendingBytes = 0;
}
let documents = 0;
const infos = db.getCollectionInfos({ type: 'collection' }).filter((c) => !c.name.startsWith('system.'));
for (const info of infos) {
  const coll = db.getCollection(info.name);
  write(EJSON.stringify({ collection: info.name, options: info.options || {}, indexes: coll.getIndexes() },
    CANONICAL));
  coll.find({}).batchSize(1000).forEach((doc) => {
    write(EJSON.stringify(doc, CANONICAL));
    documents += 1;
  });
}
flush();
fs.closeSync(fd);
print(documents);
