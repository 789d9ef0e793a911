"""Seconds the mongodb plugin's restore spent swapping shadows in, from the host's
JSON log (stderr of `envsync-host --log-format json run …`): from the plugin's
"loaded N documents into … shadow collection(s)" line to its "made … live" line.
Prints nothing when either line is missing."""
import datetime
import json
import sys

at = {}
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    message = event.get("message", "")
    for key, start in (("loaded", "loaded "), ("live", "made ")):
        if message.startswith(start) and "timestamp" in event:
            at[key] = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
if len(at) == 2:
    print(f"{(at['live'] - at['loaded']).total_seconds():.3f}")
