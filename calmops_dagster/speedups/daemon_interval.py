"""The ``minimum_interval_seconds`` to give Dagster so that a sensor ticks every ``interval_seconds``.

Dagster's sensor daemon looks at its sensors in a loop that starts every 5 s (``MIN_INTERVAL_LOOP_TIME`` in
``dagster._daemon.sensor``, not a public setting) and evaluates a sensor when the time since its last tick's
start is at least the sensor's minimum interval. The tick's start is stamped a few milliseconds after the
loop's look, so with a minimum of exactly 5 s the next look, 5 s later, finds 4.99 s and passes: a 5-s sensor
ticked every 10 s, a 15-s one every 20 s. Asking for one second less makes the tick come at the first look
``interval_seconds`` after the previous one, as the spec says. Intervals are still whole multiples of the
daemon's 5-s loop: 7 s acts as 10. This leans on how the daemon's loop is timed, so it is a speed-up:
``CALMOPS_DAGSTER_SPEEDUPS=0`` gives Dagster the spec's interval as it is.
"""

from calmops_dagster.speedups import speedups_on


def daemon_min_interval(interval_seconds: int) -> int:
    """The minimum interval for a sensor meant to tick every ``interval_seconds``: one second of slack with
    the speed-ups on, the interval itself with them off."""
    return max(1, interval_seconds - 1) if speedups_on() else interval_seconds
