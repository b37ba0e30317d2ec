"""Test-wide settings."""

import freezegun

# The request gate and the throttle pacer measure real elapsed time: under a frozen clock a
# token bucket would never refill and a poll would wait forever. Tests that move time do so
# for the accounting, not for the rate limit.
freezegun.configure(extend_ignore_list=["exporter.ratelimit"])
