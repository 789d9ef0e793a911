// Runs the operator's script (on stdin) against the target database, with
// `db` set to it. mongosh stops at the first uncaught error and exits with
// an error code: the step fails, statements after it do not run.
db = envsyncConnect();
const scriptPath = require('path').join(require('os').tmpdir(), 'envsync-transform.js');
fs.writeFileSync(scriptPath, readStdin(ENVSYNC.scriptLimit), { mode: 0o600 });
load(scriptPath);
