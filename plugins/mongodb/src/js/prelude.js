// Shared by every envsync mongosh script. `ENVSYNC` (the job: database,
// connection options, batch sizes; never a secret) is defined before this.
// Credentials reach this process only through the environment the host
// builds for the step's connection (describe().credentials).
const fs = require('fs');
const { StringDecoder } = require('string_decoder');
const napCell = new Int32Array(new SharedArrayBuffer(4));
const SHADOW = '__envsync_new_';

function nap(ms) {
  Atomics.wait(napCell, 0, 0, ms);
}

// Connects to the step's connection and returns its database.
function envsyncConnect() {
  const env = process.env;
  const host = env.ENVSYNC_MONGODB_HOST || '127.0.0.1';
  const port = env.ENVSYNC_MONGODB_PORT || '27017';
  const user = env.ENVSYNC_MONGODB_USER || '';
  const password = env.ENVSYNC_MONGODB_PASSWORD || '';
  const where = (host.includes(':') ? '[' + host + ']' : host) + ':' + port;
  const auth = user ? encodeURIComponent(user) + ':' + encodeURIComponent(password) + '@' : '';
  const query = Object.entries(ENVSYNC.uriOptions)
    .map(([k, v]) => k + '=' + encodeURIComponent(String(v)))
    .join('&');
  const mongo = new Mongo('mongodb://' + auth + where + '/?' + query);
  return mongo.getDB(ENVSYNC.database);
}

// Writes all of `buf` to `fd`, waiting while a non-blocking pipe is full.
function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      nap(1);
    }
  }
}

// Lines out to stdout, sent in pieces of about 1 MiB.
class Out {
  constructor() { this.parts = []; this.size = 0; }
  line(text) {
    this.parts.push(text);
    this.size += text.length + 1;
    if (this.size >= 1048576) this.flush();
  }
  flush() {
    if (this.parts.length === 0) return;
    this.parts.push('');
    writeAll(1, Buffer.from(this.parts.join('\n')));
    this.parts = [];
    this.size = 0;
  }
}

// Lines of stdin; `next()` returns null at the end. A last line without its
// newline is an error: the stream was cut off.
class Lines {
  constructor() {
    this.buf = Buffer.alloc(1048576);
    this.decoder = new StringDecoder('utf8');
    this.rest = '';
    this.lines = [];
    this.i = 0;
    this.eof = false;
    this.number = 0;
  }
  next() {
    while (this.i >= this.lines.length) {
      if (this.eof) return null;
      this.fill();
    }
    this.number += 1;
    return this.lines[this.i++];
  }
  fill() {
    let n;
    for (;;) {
      try {
        n = fs.readSync(0, this.buf, 0, this.buf.length, null);
        break;
      } catch (e) {
        if (e.code === 'EOF') { n = 0; break; }
        if (e.code !== 'EAGAIN') throw e;
        nap(1);
      }
    }
    this.i = 0;
    if (n === 0) {
      this.eof = true;
      this.lines = [];
      const rest = this.rest + this.decoder.end();
      if (rest.length > 0) {
        throw new Error('line ' + (this.number + 1) + ' is cut off (no newline at the end of the stream)');
      }
      return;
    }
    const parts = (this.rest + this.decoder.write(this.buf.subarray(0, n))).split('\n');
    this.rest = parts.pop();
    this.lines = parts;
  }
}

// Everything of stdin as text (small inputs: scripts, plans).
function readStdin(limit) {
  const chunks = [];
  let size = 0;
  const buf = Buffer.alloc(262144);
  for (;;) {
    let n;
    try {
      n = fs.readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      if (e.code === 'EOF') break;
      if (e.code !== 'EAGAIN') throw e;
      nap(1);
      continue;
    }
    if (n === 0) break;
    size += n;
    if (size > limit) throw new Error('the input is larger than ' + limit + ' bytes');
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

// The user collections of `db`, sorted by name: no views, no system.*
// collections, no envsync shadows.
function userCollections(db) {
  return db.getCollectionInfos({}, { nameOnly: false })
    .filter((c) => (c.type || 'collection') === 'collection')
    .filter((c) => !c.name.startsWith('system.') && !c.name.startsWith('__envsync_'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function shadowCollections(db) {
  return db.getCollectionInfos({}, { nameOnly: true })
    .map((c) => c.name)
    .filter((name) => name.startsWith(SHADOW));
}

const CANONICAL = { relaxed: false };
