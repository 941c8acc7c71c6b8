"""python/bench_rounds.py — the timing loop the package's benchmark scripts share.

    from bench_rounds import best_of   # the scripts' own folder is on sys.path
    best = best_of({"ours": lambda: f(), "theirs": lambda: g()}, repeats=7)
"""
import time


def best_of(runs, repeats):
    """best_of: the best wall time in seconds of each callable in ``runs`` (name ->
    callable), as a dict of the same names, over ``repeats`` rounds. Each is called once
    first (to warm the page cache, pools and allocators), then once per round, the
    callables alternated within a round so that a noisy machine weighs on all alike.
    Exceptions from a callable propagate."""
    for fn in runs.values():
        fn()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}
