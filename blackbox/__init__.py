"""blackbox: a flight recorder for cosmetics factories."""
