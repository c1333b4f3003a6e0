"""Level-triggered controllers: each one's ``sync(key)`` reads desired and actual state from
informer caches and converges them with conditional writes; ``base.run_workers`` drives it
from a work queue."""
