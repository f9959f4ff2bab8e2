import ferroray as ray
import time

# Takes 25 seconds to finish.
@ray.remote
def f():
    for i in range(5):
        time.sleep(5)
        yield i

for obj_ref in f.remote():
    # Prints every 5 seconds and stops after 25 seconds.
    print(ray.get(obj_ref))
