import ferroray as ray
import time

@ray.remote
def task():
    for i in range(5):
        time.sleep(5)
        yield i

# The generator yields output every 5 seconds
for obj_ref in task.remote():
    print(ray.get(obj_ref))
