"""Protocol drivers behind one small interface (:mod:`drivers.base`), found through :mod:`drivers.registry`."""
