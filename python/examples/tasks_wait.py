import ferroray as ray
import time

@ray.remote
def slow_function():
    time.sleep(10)
    return 1

object_refs = [slow_function.remote() for _ in range(2)]
# Return as soon as one of the tasks finished execution.
ready_refs, remaining_refs = ray.wait(object_refs, num_returns=1, timeout=None)
