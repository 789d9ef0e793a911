// Drops the shadow collections a failed restore or copy left behind.
const db = envsyncConnect();
const names = shadowCollections(db);
for (const name of names) db.getCollection(name).drop();
writeAll(1, Buffer.from(JSON.stringify({ dropped: names }) + '\n'));
