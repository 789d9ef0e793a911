// Data of the `mongo` benchmark (scripts/bench.sh): $BENCH_DOCS small
// documents (about 130 bytes of BSON each) in the collection `events`, with a
// secondary index, loaded in batches of 10,000. Run by mongosh against the
// benchmark's database; prints the document count.
const total = Number(process.env.BENCH_DOCS);
const events = db.getCollection('events');
events.createIndex({ user: 1, at: -1 });
for (let start = 0; start < total; start += 10000) {
  const docs = [];
  for (let i = start; i < Math.min(total, start + 10000); i++) {
    docs.push({
      user: i % 5000,
      n: i,
      at: new Date(1795000000000 + i * 1000),
      kind: 'kind-' + (i % 17),
      amount: NumberDecimal(String((i % 100000) / 100)),
      msg: 'event ' + i + ' happened',
    });
  }
  events.insertMany(docs, { ordered: false });
}
print(events.countDocuments({}));
