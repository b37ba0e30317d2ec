"""One target's polling, layer by layer (see README, "How jobs are counted"):

- `schedule`: which streams are due (the idle back-off);
- `streams`: a target's stream trackers and where each one's counting begins (the baseline
  rules: service start, new tags, new queues, queues back after an hour, restored state);
- `pipeline`: one poll's calls to CI, run side by side; every result is an immutable record;
- `target`: the target itself: plan, run the pipeline, commit, health, snapshot, reloads;
- `clients`: how a target's CI client is built, and what clients with the same keys share.

Everything mutable here belongs to the target's own poll thread; the pipeline's pool threads
see frozen plans and hand back frozen results. exporter.poller runs the threads.
"""
