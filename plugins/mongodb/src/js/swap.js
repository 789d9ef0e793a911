// Makes the shadow collections live: one renameCollection with dropTarget
// per collection (atomic for readers: they see the old or the new
// collection, never none), within the database, so DocumentDB (no
// cross-database rename) can do it too. Then drops the live collections the
// artifact does not have, unless told to keep them. The plan comes on stdin.
const db = envsyncConnect();
const plan = JSON.parse(readStdin(64 * 1048576));
const done = [];
const reapplied = [];
const VALIDATION = ['validator', 'validationLevel', 'validationAction'];

function validation(name) {
  const info = db.getCollectionInfos({ name: name })[0];
  const options = (info && info.options) || {};
  const kept = {};
  for (const key of VALIDATION) if (key in options) kept[key] = options[key];
  return kept;
}

for (const c of plan.collections) {
  const wanted = validation(c.shadow);
  let result;
  try {
    result = db.adminCommand({
      renameCollection: ENVSYNC.database + '.' + c.shadow,
      to: ENVSYNC.database + '.' + c.name,
      dropTarget: true,
    });
  } catch (e) {
    result = { ok: 0, error: e.message };
  }
  if (result.ok !== 1) {
    throw new Error('making ' + c.name + ' live failed after ' + done.length + ' of ' +
      plan.collections.length + ' collections were swapped (' + (done.join(', ') || 'none') +
      '): ' + JSON.stringify(result));
  }
  done.push(c.name);
  // MongoDB keeps a collection's options through a rename; a server that
  // loses them (SecantusDB) gets them back at once, and the plugin says so.
  if (Object.keys(wanted).length > 0 &&
      EJSON.stringify(validation(c.name), CANONICAL) !== EJSON.stringify(wanted, CANONICAL)) {
    const fixed = db.runCommand(Object.assign({ collMod: c.name }, wanted));
    if (fixed.ok !== 1) {
      throw new Error('collection ' + c.name + ' lost its validator in the rename and collMod ' +
        'could not set it again: ' + JSON.stringify(fixed));
    }
    reapplied.push(c.name);
  }
}
const dropped = [];
if (!plan.keepOthers) {
  const restored = new Set(plan.collections.map((c) => c.name));
  for (const info of userCollections(db)) {
    if (!restored.has(info.name)) {
      db.getCollection(info.name).drop();
      dropped.push(info.name);
    }
  }
}
writeAll(1, Buffer.from(JSON.stringify({ swapped: done, dropped: dropped, optionsReapplied: reapplied }) + '\n'));
